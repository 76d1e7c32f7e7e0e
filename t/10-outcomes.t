# The outcome table of ory_session: every Kratos answer and every input maps to one status,
# logged once with its reason, and only the session credential ever reaches Kratos.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $BOB  = '6a1f2e3d-4c5b-4a69-8788-99aabbccddee';

my $t = OryTest->new->serve(<<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_session_timeout 1s;
    # Every request in this file asks Kratos: the cache has its own tests.
    ory_session_cache_size 0;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;

        location / {
            ory_session on;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /public/ {
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /dead/ {
            ory_session on;
            ory_session_kratos_url http://127.0.0.1:%%PORT_dead%%;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /prefixed/ {
            ory_session on;
            ory_session_kratos_url %%KRATOS_URL%%/.ory/;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF

my @jane = (Cookie => 'ory_kratos_session=jane-cookie');

subtest 'a valid session lets the request through with the identity' => sub {
    for my $case (
        [cookie      => [Cookie => 'ory_kratos_session=jane-cookie'], $JANE],
        [token       => ['X-Session-Token' => 'ory_st_bob'],          $BOB],
        [bearer      => [Authorization => 'Bearer ory_st_jane'],      $JANE],
        [bearer_case => [Authorization => 'bEaReR ory_st_bob'],       $BOB],
    ) {
        my ($name, $headers, $id) = @$case;
        my ($r, $calls, $log) = $t->check('/app', @$headers);
        is $r->{status}, 200, "$name: 200";
        is $r->{json}{headers}{'x-user-id'}, $id, "$name: the upstream gets the user id";
        is $calls, 1, "$name: one whoami call";
        is scalar @$log, 0, "$name: nothing logged for an allowed request";
    }
};

subtest 'no credential: 401 without asking Kratos' => sub {
    my ($r, $calls, $log) = $t->check('/app');
    is $r->{status}, 401, 'answered 401';
    is $calls, 0, 'Kratos not called';
    is scalar @$log, 1, 'one log line';
    like $log->[0], qr/\[info\].*no session credential.*while checking session/, 'reason logged at info';
    is $t->get('/public/x')->{status}, 200, 'a location without ory_session stays public';
};

subtest 'Kratos refusals' => sub {
    for my $case (
        ['unknown session'   => 'nobody-cookie',        401, qr/Kratos rejected the session/],
        ['inactive session'  => 'inactive-cookie',      401, qr/not active/],
        ['expired session'   => 'expired-cookie',       401, qr/expired/],
        ['AAL not satisfied' => 'aal2-required-cookie', 403, qr/assurance level/],
    ) {
        my ($name, $cookie, $status, $reason) = @$case;
        my ($r, $calls, $log) = $t->check('/app', Cookie => "ory_kratos_session=$cookie");
        is $r->{status}, $status, "$name: $status";
        is $calls, 1, "$name: one whoami call";
        is scalar @$log, 1, "$name: logged once";
        like $log->[0] // '', qr/\[info\] .*ory_session: .*$reason.* while checking session/,
            "$name: reason";
        unlike $log->[0] // '', qr/\Q$cookie\E/, "$name: the credential is not logged";
    }
};

subtest 'Kratos failures fail closed' => sub {
    for my $case (
        [429         => {mode => 'status', status => 429},  503, qr/rate-limited/],
        [500         => {mode => 'status', status => 500},  502, qr/Kratos answered 500/],
        [503         => {mode => 'status', status => 503},  502, qr/Kratos answered 503/],
        [404         => {mode => 'status', status => 404},  502, qr/Kratos answered 404/],
        [close       => {mode => 'close'},                  502, qr/unreachable/i],
        [reset       => {mode => 'reset_headers'},          502, qr/unreachable/i],
        [reset_body  => {mode => 'reset_body'},             502, qr/unreachable|malformed/i],
        [garbage     => {mode => 'garbage'},                502, qr/malformed/i],
        [truncated   => {mode => 'truncated'},              502, qr/malformed/i],
        [oversize    => {mode => 'oversize'},               502, qr/larger than 1048576/],
        [wrong_type  => {mode => 'wrong_type'},             502, qr/content type/i],
        [no_identity => {mode => 'no_identity'},            502, qr/identity/],
        [slow        => {mode => 'normal', delay_ms => 3000}, 504, qr/did not answer/],
        [stall       => {mode => 'stall_body'},             504, qr/did not answer/],
    ) {
        my ($name, $behaviour, $status, $reason) = @$case;
        my ($r, undef, $log) = $t->check_while($behaviour, '/app', @jane);
        is $r->{status}, $status, "$name: $status";
        is scalar @$log, 1, "$name: logged once";
        like $log->[0] // '', qr/\[error\] .*ory_session: .*$reason.* while checking session/,
            "$name: reason at error level";
        unlike $r->{body}, qr/\Q$JANE\E/, "$name: nothing of the session leaks";
    }
    $t->kratos_reset;
    is $t->get('/app', @jane)->{status}, 200, 'Kratos back: requests pass again';
};

subtest 'Kratos not listening' => sub {
    my ($r, undef, $log) = $t->check('/dead/x', @jane);
    is $r->{status}, 502, 'answered 502';
    like $log->[0] // '', qr/\[error\] .*unreachable/, 'logged as unreachable';
};

subtest 'a path prefix in ory_session_kratos_url is kept' => sub {
    my ($r) = $t->check('/prefixed/x', @jane);
    is $r->{status}, 200, 'answered 200';
    is $t->kratos_calls->{requests}[0]{path}, '/.ory/sessions/whoami', 'whoami under the prefix';
};

subtest 'only the session credential reaches Kratos' => sub {
    my ($r) = $t->check('/app', Cookie => 'theme=dark; ory_kratos_session=jane-cookie; csrf_token=abc',
        'X-Other' => 'x', Authorization => 'Basic Zm9vOmJhcg==');
    is $r->{status}, 200, 'answered 200';
    my $req = $t->kratos_calls->{requests}[0];
    is $req->{headers}{cookie}, 'ory_kratos_session=jane-cookie', 'only the session cookie is sent';
    ok !exists $req->{headers}{authorization}, 'no Authorization header';
    ok !exists $req->{headers}{'x-other'}, 'no other client header';
    is $req->{method}, 'GET', 'GET';
    is $req->{path}, '/sessions/whoami', 'whoami path';
    like $req->{headers}{accept} // '', qr{application/json}, 'asks for JSON';

    ($r) = $t->check('/app', 'X-Session-Token' => 'ory_st_bob', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{json}{headers}{'x-user-id'}, $BOB, 'X-Session-Token wins over the cookie';
    $req = $t->kratos_calls->{requests}[0];
    is $req->{headers}{'x-session-token'}, 'ory_st_bob', 'token sent';
    ok !exists $req->{headers}{cookie}, 'and the cookie is not';

    ($r) = $t->check('/app', Authorization => 'Bearer ory_st_bob', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'the cookie wins over a bearer token';
};

subtest 'a client cannot choose its identity' => sub {
    my ($r) = $t->check('/app', @jane, 'X-User-Id' => 'someone-else');
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'proxy_set_header overrides the client value';
    ($r) = $t->check('/app', 'X-User-Id' => 'someone-else');
    is $r->{status}, 401, 'and without a session the request does not get through';
};

subtest 'hostile credentials are refused without a Kratos call' => sub {
    for my $case (
        ['oversize cookie'         => [Cookie => 'ory_kratos_session=' . ('a' x 4097)]],
        ['oversize token'          => ['X-Session-Token' => 'b' x 4097]],
        ['token with a space'      => ['X-Session-Token' => 'ory st jane']],
        ['cookie with a backslash' => [Cookie => 'ory_kratos_session=ab\\cd']],
        ['bearer with high bytes'  => [Authorization => "Bearer \xff\xfe"]],
    ) {
        my ($name, $headers) = @$case;
        my ($r, $calls, $log) = $t->check('/app', @$headers);
        is $r->{status}, 401, "$name: 401";
        is $calls, 0, "$name: Kratos not called";
        is scalar @$log, 1, "$name: logged once";
    }
};

$t->stop;
done_testing;
