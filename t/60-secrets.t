# Credential values never appear in the error log, at the most verbose level, whatever the
# outcome of the request.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $t = OryTest->new->serve(<<'EOF', error_log_level => 'debug');
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_session_timeout 500ms;
    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        location / {
            ory_session on;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF

# Unique values, so that any occurrence in the log can only come from the request.
my %secret = (
    cookie => 'sekret-cookie-4f1d2c',
    token  => 'ory_st_sekret_9a8b7c',
    bearer => 'sekret-bearer-5e6f70',
);
$t->kratos_add_sessions({ sessions => [
    { name => 'secret-cookie', credentials => [$secret{cookie}] },
    { name => 'secret-token',  credentials => [$secret{token}] },
    { name => 'secret-bearer', credentials => [$secret{bearer}] },
] });

my @ways = (
    [Cookie => "theme=dark; ory_kratos_session=$secret{cookie}"],
    ['X-Session-Token' => $secret{token}],
    [Authorization => "Bearer $secret{bearer}"],
    [Cookie => 'ory_kratos_session=sekret-unknown-123abc'],
    [Cookie => 'ory_kratos_session=' . ('sekret-long-' x 400)],
);

for my $behaviour ({}, {mode => 'status', status => 500}, {mode => 'garbage'},
                   {mode => 'normal', delay_ms => 1000}, {mode => 'status', status => 429}) {
    $t->kratos_reset;
    $t->kratos_behaviour($behaviour) if %$behaviour;
    $t->get('/x', @$_) for @ways;
}
$t->kratos_reset;
is $t->get('/x', @{ $ways[0] })->{status}, 200, 'requests were served';

# nginx's own debug lines print every request header ("http header: ..."): that is nginx
# core, in --with-debug builds only. What the module writes must hold no credential.
my @ours = $t->log_lines(qr/ory_session/);
ok scalar(grep { /\[debug\]/ } @ours) >= 10, 'the module wrote debug lines';
ok scalar(grep { /while checking session/ } @ours) >= 10, 'and refusals and failures';
is_deeply [grep { /sekret/ } @ours], [], 'no credential value appears in any line of the module';

# At the info level, the level the module logs refusals at, nothing at all shows a credential.
my @lines_with_secret = grep { m{^\d{4}/\d\d/\d\d \S+ \[(?!debug)} && /sekret/ } split /\n/, $t->error_log;
is_deeply \@lines_with_secret, [], 'no non-debug line of nginx shows a credential';

$t->stop;
done_testing;
