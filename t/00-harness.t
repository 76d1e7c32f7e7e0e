# The harness and its helper daemons, without the ory module: the Kratos stub answers like
# Kratos, counts calls and misbehaves on demand; the echo backend echoes; OryTest drives a
# plain nginx and catches worker crashes in error.log.
use v5.36;
use FindBin;
use lib "$FindBin::Bin/lib";
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(strftime);
use Test2::API qw(intercept);
use Test::More;
use Time::HiRes qw(time);
use OryTest;

my $t = OryTest->new;
my $kratos = $t->start_kratos;
like $kratos, qr{^http://127\.0\.0\.1:\d+$}, 'kratos_url';
my $http = HTTP::Tiny->new(timeout => 10);
my $whoami = "$kratos/sessions/whoami";
my $jane_id = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';

sub whoami (%headers) {
    my $res = $http->get($whoami, { headers => \%headers });
    $res->{json} = eval { decode_json($res->{content}) };
    return $res;
}

subtest 'credentials are read like Kratos reads them' => sub {
    my $r = whoami(Cookie => 'other=1; ory_kratos_session=jane-cookie');
    is $r->{status}, 200, 'jane by cookie';
    is $r->{json}{identity}{id}, $jane_id, 'identity id';
    is $r->{json}{identity}{traits}{email}, 'jane@example.com', 'traits';
    is $r->{json}{authenticator_assurance_level}, 'aal2', 'aal';
    ok $r->{json}{active}, 'active';
    like $r->{json}{expires_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'expires_at is RFC 3339 with fraction';
    is $r->{headers}{'x-kratos-authenticated-identity-id'}, $jane_id, 'X-Kratos-Authenticated-Identity-Id';
    is $r->{headers}{'cache-control'}, 'private, no-cache, no-store, must-revalidate', 'Cache-Control';
    is $r->{headers}{'content-type'}, 'application/json; charset=utf-8', 'Content-Type';

    is whoami('X-Session-Token' => 'ory_st_jane')->{json}{identity}{id}, $jane_id, 'jane by token';
    is whoami(Authorization => 'Bearer ory_st_jane')->{json}{identity}{id}, $jane_id, 'jane by bearer';
    is whoami(Authorization => 'bEaReR ory_st_jane')->{status}, 200, 'bearer scheme is case-insensitive';
    is whoami(Authorization => 'Bearer  ory_st_jane')->{status}, 401, 'bearer needs exactly two parts';
    is whoami(Cookie => 'ory_session_acme=bob-cookie')->{json}{identity}{traits}{email}, 'bob@example.com',
        'ory_session_ prefix cookie';
    is whoami('X-Session-Token' => 'nope', Cookie => 'ory_kratos_session=jane-cookie')->{status}, 401,
        'X-Session-Token is used alone when present';
    is whoami(Cookie => 'ory_kratos_session=bob-cookie', Authorization => 'Bearer ory_st_jane')
        ->{json}{identity}{traits}{email}, 'bob@example.com', 'cookie before bearer';
    is whoami(Cookie => 'session=jane-cookie', Authorization => 'Bearer ory_st_jane')->{status}, 200,
        'other cookies are ignored';

    my $u = whoami(Cookie => 'ory_kratos_session=unknown');
    is $u->{status}, 401, 'unknown credential';
    is $u->{content}, '{"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials'
        . ' found in the request.","message":"The request could not be authorized"}}', 'exact 401 body';
    is whoami()->{status}, 401, 'no credential';
    is $http->get("$kratos/.ory/sessions/whoami", { headers => { 'X-Session-Token' => 'ory_st_jane' } })->{status},
        200, 'whoami under a path prefix';
};

subtest 'special sessions' => sub {
    my $r = whoami('X-Session-Token' => 'ory_st_aal2_required');
    is $r->{status}, 403, 'aal2 required';
    is $r->{headers}{'ory-error-id'}, 'session_aal2_required', 'Ory-Error-Id';
    is $r->{json}{error}{id}, 'session_aal2_required', 'error id';
    like $r->{json}{redirect_browser_to}, qr/aal=aal2/, 'redirect_browser_to';
    ok !whoami('X-Session-Token' => 'ory_st_inactive')->{json}{active}, 'inactive session';
    ok !exists whoami('X-Session-Token' => 'ory_st_noident')->{json}{identity}, 'session without identity';
    my $now = strftime('%Y-%m-%dT%H:%M:%S', gmtime);
    cmp_ok whoami('X-Session-Token' => 'ory_st_expired')->{json}{expires_at}, 'lt', $now, 'expired session';
    cmp_ok whoami('X-Session-Token' => 'ory_st_jane')->{json}{expires_at}, 'gt', $now, 'valid session';
    is whoami('X-Session-Token' => 'ory_st_alice')->{json}{authenticator_assurance_level}, 'aal1', 'alice is aal1';
    is whoami('X-Session-Token' => 'ory_st_cachefor')->{headers}{'ory-session-cache-for'}, '2', 'Ory-Session-Cache-For';
    like whoami(Cookie => 'ory_kratos_session=extend-cookie')->{headers}{'set-cookie'},
        qr/^ory_kratos_session=extend-cookie-2;/, 'Set-Cookie';
    my $tok = $http->get("$whoami?tokenize_as=jwt_example", { headers => { 'X-Session-Token' => 'ory_st_jane' } });
    like decode_json($tok->{content})->{tokenized}, qr/^ey[\w-]+\.[\w-]+\.[\w-]+$/, 'tokenize_as';
    is $http->get("$whoami?tokenize_as=nope", { headers => { 'X-Session-Token' => 'ory_st_jane' } })->{status},
        400, 'unknown tokenize_as template';

    $t->kratos_add_sessions({ sessions => [{ credentials => ['runtime-cookie'], expires_in => -5,
        session => { identity => { traits => { email => 'rt@example.com' } } } }] });
    my $rt = whoami(Cookie => 'ory_kratos_session=runtime-cookie')->{json};
    is $rt->{identity}{traits}{email}, 'rt@example.com', 'session added at runtime';
    is $rt->{identity}{schema_id}, 'default', 'defaults filled in';
};

subtest 'calls are counted' => sub {
    $t->kratos_reset;
    is $t->kratos_calls->{count}, 0, 'reset';
    whoami('X-Session-Token' => 'ory_st_jane');
    $http->get("$whoami?x=1", { headers => { Cookie => 'ory_kratos_session=bob-cookie' } });
    $http->get("$kratos/not-whoami");
    my $calls = $t->kratos_calls;
    is $calls->{count}, 2, 'two whoami calls, control and other paths not counted';
    is $calls->{requests}[0]{headers}{'x-session-token'}, 'ory_st_jane', 'headers recorded';
    is $calls->{requests}[1]{query}, 'x=1', 'query recorded';
    is $calls->{requests}[1]{path}, '/sessions/whoami', 'path recorded';
    ok $calls->{requests}[1]{time} >= $calls->{requests}[0]{time}, 'arrival order';
};

subtest 'behaviour modes' => sub {
    $t->kratos_behaviour({ mode => 'status', status => 500, count => 1 });
    my $r = whoami('X-Session-Token' => 'ory_st_jane');
    is $r->{status}, 500, 'status 500';
    is $r->{json}{error}{code}, 500, 'error JSON';
    is whoami('X-Session-Token' => 'ory_st_jane')->{status}, 200, 'count 1: back to normal';

    $t->kratos_behaviour({ mode => 'status', status => 429 });
    $r = whoami('X-Session-Token' => 'ory_st_jane');
    is $r->{status}, 429, 'status 429';
    ok defined $r->{headers}{'x-ratelimit-remaining'}, 'x-ratelimit headers';
    is whoami('X-Session-Token' => 'ory_st_jane')->{status}, 429, 'no count: until reset';
    $t->kratos_reset;

    $t->kratos_behaviour({ mode => 'normal', delay_ms => 400, count => 1 });
    my $t0 = time;
    is whoami('X-Session-Token' => 'ory_st_jane')->{status}, 200, 'delayed answer';
    cmp_ok time - $t0, '>=', 0.35, 'delay honoured';

    $t->kratos_behaviour({ mode => 'garbage', count => 1 });
    $r = whoami('X-Session-Token' => 'ory_st_jane');
    is $r->{status}, 200, 'garbage: 200';
    is $r->{content}, '<html>not json', 'garbage body';
    like $r->{headers}{'content-type'}, qr{application/json}, 'garbage claims JSON';

    $t->kratos_behaviour({ mode => 'truncated', count => 1 });
    $r = whoami('X-Session-Token' => 'ory_st_jane');
    ok $r->{success} && !$r->{json}, 'truncated: complete response, invalid JSON';

    $t->kratos_behaviour({ mode => 'wrong_type', count => 1 });
    like whoami('X-Session-Token' => 'ory_st_jane')->{headers}{'content-type'}, qr{text/html}, 'wrong_type';

    $t->kratos_behaviour({ mode => 'no_identity', count => 1 });
    $r = whoami('X-Session-Token' => 'ory_st_jane');
    ok $r->{json}{active} && !exists $r->{json}{identity}, 'no_identity';

    $t->kratos_behaviour({ mode => 'oversize', count => 1 });
    is length whoami('X-Session-Token' => 'ory_st_jane')->{content}, 2 * 1024 * 1024, 'oversize: 2 MiB';

    # Raw requests: HTTP::Tiny retries a GET once when the connection breaks.
    my $req = "GET /sessions/whoami HTTP/1.1\r\nHost: x\r\nX-Session-Token: ory_st_jane\r\n\r\n";
    for my $mode (qw(close reset_headers reset_body)) {
        $t->kratos_behaviour({ mode => $mode, count => 1 });
        my $r = $t->raw_request($req, port => $t->port('kratos'), timeout => 5);
        ok $r->{error}, "$mode: no complete answer ($r->{error})";
    }
    $t->kratos_behaviour({ mode => 'drip', count => 1 });
    my $drip = $t->raw_request($req, port => $t->port('kratos'), timeout => 2.5);
    is $drip->{error}, 'timeout', 'drip: times out';
    like $drip->{raw}, qr/^HTT/, 'drip: a few bytes arrived';
    $t->kratos_behaviour({ mode => 'stall_body', count => 1 });
    my $stall = HTTP::Tiny->new(timeout => 1)->get($whoami, { headers => { 'X-Session-Token' => 'ory_st_jane' } });
    ok !$stall->{success}, 'stall_body: times out';
    is whoami('X-Session-Token' => 'ory_st_jane')->{status}, 200, 'normal again';
};

subtest '300 delayed answers are served concurrently' => sub {
    $t->kratos_reset;
    $t->kratos_behaviour({ mode => 'normal', delay_ms => 1000 });
    my $t0 = time;
    my $res = $t->parallel_get([map { ['/sessions/whoami', 'X-Session-Token' => 'ory_st_bob'] } 1 .. 300],
        port => $t->port('kratos'));
    my $took = time - $t0;
    is scalar(grep { $_->{status} == 200 && $_->{json}{identity}{traits}{email} eq 'bob@example.com' } @$res), 300,
        'all 300 answered';
    cmp_ok $took, '<', 4, "in parallel (${\ sprintf '%.2f', $took} s)";
    is $t->kratos_calls->{count}, 300, 'counted';
    $t->kratos_reset;
};

subtest 'echo backend' => sub {
    $t->start_backend;
    my $r = $t->request(method => 'POST', path => '/a/b?c=d', port => $t->port('backend'), body => 'xyz',
        headers => [Cookie => ['a=1', 'b=2'], 'X-Odd' => "caf\xc3\xa9"]);
    is $r->{status}, 200, 'echo';
    is $r->{json}{method}, 'POST', 'method';
    is $r->{json}{uri}, '/a/b?c=d', 'uri';
    is $r->{json}{headers}{cookie}, 'a=1; b=2', 'cookies joined';
    is $r->{json}{headers}{'x-odd'}, "caf\x{e9}", 'UTF-8 header value';
    my $all = $t->parallel_get([map { ["/$_"] } 1 .. 300], port => $t->port('backend'));
    is scalar(grep { $all->[$_ - 1]{json}{uri} eq "/$_" } 1 .. 300), 300, '300 concurrent, in order';
};

my $nginx = eval { $t->nginx_binary };
if (!$nginx) {
    fail "no nginx binary: $@";
} else {
    subtest 'plain nginx driven by the harness' => sub {
        my $n = OryTest->new;
        $n->start_backend;
        $n->write_config(<<'EOF', module => 0, worker_processes => 2);
    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        location / {
            proxy_set_header X-Test "yes";
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location = /index.html { root html; }
    }
EOF
        my ($code, $out) = $n->nginx_test;
        is $code, 0, 'nginx -t' or diag $out;
        $n->start_nginx;
        is scalar(my @w = $n->worker_pids), 2, 'two workers';
        my $r = $n->get('/hello?x=1', 'X-Client' => 'me');
        is $r->{status}, 200, 'proxied';
        is $r->{json}{uri}, '/hello?x=1', 'uri reached the backend';
        is $r->{json}{headers}{'x-test'}, 'yes', 'proxy_set_header reached the backend';
        is $r->{json}{headers}{'x-client'}, 'me', 'client header forwarded';
        is $n->get('/index.html')->{body}, "index\n", 'static file from the prefix';
        my $raw = $n->raw_request("GET / HTTP/1.0\r\n\r\n");
        is $raw->{status}, 200, 'raw_request';
        my $all = $n->parallel_get([map { ["/p$_"] } 1 .. 300]);
        is scalar(grep { $all->[$_ - 1]{json}{uri} eq "/p$_" } 1 .. 300), 300, '300 concurrent through nginx';
        ok $n->abort_get('/aborted'), 'abort_get';
        ok $n->abort_get('/aborted', after_ms => 50, rst => 1), 'abort_get with delay and reset';
        $n->reload;
        my @w2 = $n->worker_pids;
        is scalar(@w2), 2, 'new workers after reload';
        ok !(grep { my $x = $_; grep { $_ == $x } @w } @w2), 'a new generation';
        ok $n->wait_for(sub { $n->log_lines(qr/start worker process/) >= 4 }), 'log_lines';
        is $n->get('/after-reload')->{status}, 200, 'serves after reload';

        # A crashed worker must fail the test file: run the assertion in an intercept block.
        kill 'KILL', $w2[0];
        $n->wait_for(sub { $n->log_lines(qr/exited on signal/) });
        my $events = intercept { $n->stop };
        my ($check) = grep { $_->isa('Test2::Event::Ok') } @$events;
        ok $check && !$check->pass, 'a killed worker fails the error.log check';

        my $m = OryTest->new;
        $m->write_config("server { listen 127.0.0.1:%%HTTP_PORT%%; location / { empty_gif; } }\n",
            module => 0, error_log_level => 'notice');
        $m->start_nginx;
        is $m->get('/')->{headers}{'content-type'}, 'image/gif', 'empty_gif';
        $m->allow_log(qr/exited on signal 9/);
        my ($w) = $m->worker_pids;
        kill 'KILL', $w;
        $m->wait_for(sub { $m->log_lines(qr/exited on signal/) });
        $m->write_config("server { listen 127.0.0.1:%%HTTP_PORT%%; location / { no_such_directive; } }\n",
            module => 0);
        ($code, $out) = $m->nginx_test;
        isnt $code, 0, 'nginx -t fails on a bad config';
        like $out, qr/unknown directive "no_such_directive"/, 'nginx -t output';
        $events = intercept { $m->stop };
        ($check) = grep { $_->isa('Test2::Event::Ok') } @$events;
        ok $check && $check->pass, 'allow_log and nginx_test lines are exempt';
    };
}

done_testing;
