# The fault catalogue: every way Kratos can fail or misbehave, each mapped to one exact
# status and exactly one clear error.log line, after which the same worker process goes on
# serving valid requests. Nothing is let through, nothing is lost.
use v5.36;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my @JANE = (Cookie => 'ory_kratos_session=jane-cookie');

my $t = OryTest->new->serve(<<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_session_timeout 1s;
    # Every request asks Kratos: a cached answer would hide the fault.
    ory_session_cache_size 0;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;

        location / {
            ory_session on;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /dead/ {
            ory_session on;
            ory_session_kratos_url http://127.0.0.1:%%PORT_dead%%;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF

my ($WORKER) = $t->worker_pids;
ok $WORKER, "one worker process ($WORKER)";

# Sessions whose 200 body is broken in a way no behaviour mode produces.
my $kratos = $t->kratos_url;
$t->kratos_add_sessions({ sessions => [
    { name => 'no-active',   credentials => ['no-active-cookie'],   omit => ['active'] },
    { name => 'no-user-id',  credentials => ['no-user-id-cookie'],  omit => ['identity.id'] },
    { name => 'bad-expiry',  credentials => ['bad-expiry-cookie'],  session => { expires_at => 'tomorrow' } },
    { name => 'html-401',    credentials => ['html-401-cookie'],    status => 401, body => '<html>login</html>' },
    # A redirect to whoami itself: a client that followed it would loop, and hand the
    # credential to whatever host the Location names.
    { name => 'redirect',    credentials => ['redirect-cookie'],    status => 302,
      headers => { Location => "$kratos/sessions/whoami" }, body => '' },
] });

# error.log from byte $offset on, as lines; without the lines of connections that sent no
# request (the harness' probe that nginx accepts connections, logged when nginx gets to it).
sub log_since ($offset) {
    open my $fh, '<:raw', $t->prefix . '/logs/error.log' or return ();
    seek $fh, $offset, 0;
    return grep { !/ while waiting for request, / } map { s/\n\z//r } <$fh>;
}
sub log_size () { -s $t->prefix . '/logs/error.log' // 0 }

# One fault: the faulty request, then a valid one on the same (only) worker.
sub fault ($name, %c) {
    subtest $name => sub {
        $t->kratos_reset;
        $t->kratos_behaviour({ %{ $c{behaviour} }, count => 1 }) if $c{behaviour};
        (my $slug = $name) =~ s/\W+/-/g;
        my $path = ($c{location} // '/') . "fault/$slug";
        my $offset = log_size();
        my $t0 = time;
        my $r = $t->get($path, @{ $c{headers} // \@JANE });
        my $took = time - $t0;
        my @lines = log_since($offset);

        is $r->{status}, $c{status}, "answered $c{status}";
        is scalar(@lines), 1, 'exactly one error.log line' or diag join "\n", @lines;
        like $lines[0] // '', qr/^\S+ \S+ \[$c{level}\] \d+#\d+: \*\d+ ory_session: $c{reason} while checking session, client: 127\.0\.0\.1, server: , request: "GET \Q$path\E HTTP\/1\.1", host: "localhost"$/,
            "at $c{level}, saying why";
        unlike $r->{body}, qr/\Q$JANE\E/, 'nothing of the session in the answer';
        is $r->{headers}{'x-user-id'}, undef, 'no identity either';
        if ($c{timeout}) {
            cmp_ok $took, '>=', 0.9, sprintf 'after ory_session_timeout (%.2f s)', $took;
            cmp_ok $took, '<', 2.5, 'and not much later';
        } else {
            cmp_ok $took, '<', 0.8, sprintf 'at once, not by the timeout (%.2f s)', $took;
        }
        is $t->kratos_calls->{count}, $c{calls} // 1, 'whoami calls' unless ($c{location} // '') eq '/dead/';

        $offset = log_size();
        my $ok = $t->get('/after', @JANE);
        is $ok->{status}, 200, 'a valid request right after: 200';
        is $ok->{json}{headers}{'x-user-id'}, $JANE, 'with the identity';
        is_deeply [log_since($offset)], [], 'and no log line';
        is join(',', $t->worker_pids), $WORKER, 'served by the same worker process';
    };
}

my %error = (level => 'error');
my %refusal = (level => 'info', status => 401);

fault 'Kratos refuses connections', %error, location => '/dead/', status => 502,
    reason => qr/Kratos is unreachable \(connection refused\)/;
fault 'Kratos closes the connection without answering', %error, behaviour => { mode => 'close' },
    status => 502, reason => qr/Kratos is unreachable \([^)]+\)/;
fault 'Kratos resets the connection mid-headers', %error, behaviour => { mode => 'reset_headers' },
    status => 502, reason => qr/Kratos is unreachable \([^)]+\)/;
fault 'Kratos resets the connection mid-body', %error, behaviour => { mode => 'reset_body' },
    status => 502, reason => qr/Kratos is unreachable \([^)]+\)/;
fault 'Kratos sends the headers, then stalls the body', %error, behaviour => { mode => 'stall_body' },
    status => 504, timeout => 1, reason => qr/Kratos did not answer within ory_session_timeout/;
fault 'Kratos drips one byte a second', %error, behaviour => { mode => 'drip' },
    status => 504, timeout => 1, reason => qr/Kratos did not answer within ory_session_timeout/;
for my $status (500, 502, 503, 504) {
    fault "Kratos answers $status", %error, behaviour => { mode => 'status', status => $status },
        status => 502, reason => qr/Kratos answered $status/;
}
fault 'Kratos answers 429', %error, behaviour => { mode => 'status', status => 429 },
    status => 503, reason => qr/Kratos rate-limited the request \(429\)/;
fault 'Kratos answers 302 (not followed)', %error, headers => [Cookie => 'ory_kratos_session=redirect-cookie'],
    status => 502, reason => qr/Kratos answered 302/;
fault 'Kratos answers non-JSON', %error, behaviour => { mode => 'garbage' },
    status => 502, reason => qr/Kratos sent a malformed answer: syntax error at line 1 column \d+/;
fault 'Kratos answers truncated JSON', %error, behaviour => { mode => 'truncated' },
    status => 502, reason => qr/Kratos sent a malformed answer: unexpected end of input at line \d+ column \d+/;
fault 'Kratos answers JSON over the size limit', %error, behaviour => { mode => 'oversize' },
    status => 502, reason => qr/Kratos response body is larger than 1048576 bytes/;
fault 'Kratos answers with the wrong content type', %error, behaviour => { mode => 'wrong_type' },
    status => 502, reason => qr{Kratos sent a malformed answer: content type is not application/json};
fault 'a session without identity', %error, headers => [Cookie => 'ory_kratos_session=noident-cookie'],
    status => 502, reason => qr/Kratos sent a malformed answer: session has no identity/;
fault 'a session whose identity has no id', %error, headers => [Cookie => 'ory_kratos_session=no-user-id-cookie'],
    status => 502, reason => qr/Kratos sent a malformed answer: session has no identity\.id/;
fault 'a session whose expires_at is not a timestamp', %error,
    headers => [Cookie => 'ory_kratos_session=bad-expiry-cookie'],
    status => 502, reason => qr/Kratos sent a malformed answer: expires_at is not an RFC 3339 timestamp/;
fault 'a session with active: false', %refusal, headers => [Cookie => 'ory_kratos_session=inactive-cookie'],
    reason => qr/session is not active/;
fault 'a session without the active field', %refusal, headers => [Cookie => 'ory_kratos_session=no-active-cookie'],
    reason => qr/session is not active/;
fault 'a session with expires_at in the past', %refusal, headers => [Cookie => 'ory_kratos_session=expired-cookie'],
    reason => qr/session has expired/;
fault 'Kratos answers 401 with an HTML body', %refusal, headers => [Cookie => 'ory_kratos_session=html-401-cookie'],
    reason => qr/Kratos rejected the session/;

subtest 'Kratos restarts: the pooled connection is dead, the next call is not' => sub {
    is $t->get('/warm', @JANE)->{status}, 200, 'a call leaves a kept-alive connection to Kratos';
    $t->stop_kratos;
    my $offset = log_size();
    my $r = $t->get('/down', @JANE);
    is $r->{status}, 502, 'Kratos down: 502';
    my @lines = log_since($offset);
    is scalar(@lines), 1, 'one log line';
    like $lines[0] // '', qr/\[error\] .*ory_session: Kratos is unreachable \([^)]+\) while checking session/,
        'Kratos is unreachable';
    $t->start_kratos;
    $offset = log_size();
    $r = $t->get('/back', @JANE);
    is $r->{status}, 200, 'Kratos back: the very first request gets 200';
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'with the identity';
    is_deeply [log_since($offset)], [], 'and no log line';
    is join(',', $t->worker_pids), $WORKER, 'served by the same worker process';
};

$t->stop;
done_testing;
