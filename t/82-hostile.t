# Hostile input: credentials no Kratos could have issued are refused without a whoami call;
# duplicated and buried session cookies resolve the way Kratos resolves them, with one call;
# and nothing a Kratos answer holds can add a header to the proxied request or the response.
use v5.36;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $BOB  = '6a1f2e3d-4c5b-4a69-8788-99aabbccddee';

my $t = OryTest->new->serve(<<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;
    # Every request asks Kratos, so that the call count tells what each one did.
    ory_session_cache_size 0;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        # Room for thousands of cookies.
        large_client_header_buffers 4 128k;

        location / {
            ory_session on;
            proxy_set_header X-User-Id   $ory_user_id;
            proxy_set_header X-Sess      $ory_session_id;
            proxy_set_header X-Aal       $ory_session_aal;
            proxy_set_header X-Auth-At   $ory_session_authenticated_at;
            proxy_set_header X-Schema    $ory_identity_schema_id;
            proxy_set_header X-State     $ory_identity_state;
            proxy_set_header X-Traits    $ory_identity_traits;
            proxy_set_header X-Meta      $ory_identity_metadata_public;
            proxy_set_header X-Email     $ory_trait_email;
            proxy_set_header X-List      $ory_trait_list;
            proxy_set_header X-Uni       $ory_trait_uni;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
            # And back to the client: no response splitting either.
            add_header X-Resp-User  $ory_user_id always;
            add_header X-Resp-Email $ory_trait_email always;
        }
        location /prefix/ {
            ory_session on;
            ory_session_cookie ory_session_*;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF
my ($WORKER) = $t->worker_pids;

subtest 'credentials at and over 4096 bytes' => sub {
    my %at = (cookie => 'c' x 4096, token => 't' x 4096, bearer => 'b' x 4096);
    $t->kratos_add_sessions({ sessions => [
        map { { name => "long-$_", credentials => [$at{$_}], session => { identity => { id => "long-$_-id" } } } }
            sort keys %at
    ] });
    my %how = (
        cookie => sub ($v) { (Cookie => "ory_kratos_session=$v") },
        token  => sub ($v) { ('X-Session-Token' => $v) },
        bearer => sub ($v) { (Authorization => "Bearer $v") },
    );
    for my $kind (sort keys %how) {
        my ($r, $calls) = $t->check('/', $how{$kind}->($at{$kind}));
        is $r->{status}, 200, "$kind of 4096 bytes: 200";
        is $r->{json}{headers}{'x-user-id'}, "long-$kind-id", "$kind of 4096 bytes: its identity";
        is $calls, 1, "$kind of 4096 bytes: one call";

        my $log;
        ($r, $calls, $log) = $t->check('/', $how{$kind}->($at{$kind} . 'x'));
        is $r->{status}, 401, "$kind of 4097 bytes: 401";
        is $calls, 0, "$kind of 4097 bytes: Kratos not called";
        is scalar @$log, 1, "$kind of 4097 bytes: one log line";
        like $log->[0] // '', qr/\[info\] .*ory_session: .* is longer than 4096 bytes while checking session/,
            "$kind of 4097 bytes: says why";
    }
};

subtest 'empty credentials are no credential' => sub {
    for my $case (
        ['empty cookie'            => [Cookie => 'ory_kratos_session=']],
        ['empty quoted cookie'     => [Cookie => 'ory_kratos_session=""']],
        ['blank cookie'            => [Cookie => "ory_kratos_session=  \t ; theme=dark"]],
        ['cookie name alone'       => [Cookie => 'ory_kratos_session']],
        ['empty X-Session-Token'   => ['X-Session-Token' => '']],
        ['blank X-Session-Token'   => ['X-Session-Token' => "  \t "]],
        ['Bearer without token'    => [Authorization => 'Bearer ']],
        ['Bearer alone'            => [Authorization => 'Bearer']],
        ['Bearer with two spaces'  => [Authorization => 'Bearer  jane-cookie']],
    ) {
        my ($name, $headers) = @$case;
        my ($r, $calls, $log) = $t->check('/', @$headers);
        is $r->{status}, 401, "$name: 401";
        is $calls, 0, "$name: Kratos not called";
        like $log->[0] // '', qr/\[info\] .*no session credential in the request/, "$name: no credential";
    }
};

subtest 'bytes no cookie or token can hold: 401 without a Kratos call' => sub {
    for my $case (
        ['cookie with a double quote' => [Cookie => 'ory_kratos_session=ab"cd']],
        ['cookie with an open quote'  => [Cookie => 'ory_kratos_session="jane-cookie']],
        ['cookie with a comma'        => [Cookie => 'ory_kratos_session=jane-cookie,bob-cookie']],
        ['cookie with a space'        => [Cookie => 'ory_kratos_session=jane cookie']],
        ['cookie with a tab'          => [Cookie => "ory_kratos_session=jane\tcookie"]],
        ['cookie with DEL'            => [Cookie => "ory_kratos_session=jane\x7fcookie"]],
        ['cookie with a control byte' => [Cookie => "ory_kratos_session=jane\x01cookie"]],
        ['cookie with UTF-8'          => [Cookie => "ory_kratos_session=caf\xc3\xa9"]],
        ['cookie with Latin-1'        => [Cookie => "ory_kratos_session=caf\xe9"]],
        ['token with a tab'           => ['X-Session-Token' => "ory_st\tjane"]],
        ['token with DEL'             => ['X-Session-Token' => "ory_st_jane\x7f"]],
        ['token with a control byte'  => ['X-Session-Token' => "ory_st_\x1bjane"]],
        ['token with UTF-8'           => ['X-Session-Token' => "ory_st_\xe2\x80\xa8jane"]],
        ['bearer with a tab'          => [Authorization => "Bearer ory_st\tjane"]],
        ['bearer with a control byte' => [Authorization => "Bearer ory_st_\x02jane"]],
        # The credential Kratos would pick is bad: no falling back to another one.
        ['bad token, good cookie'     => ['X-Session-Token' => "bad\x01", Cookie => 'ory_kratos_session=jane-cookie']],
        ['bad cookie, good bearer'    => [Cookie => 'ory_kratos_session=a,b', Authorization => 'Bearer ory_st_jane']],
    ) {
        my ($name, $headers) = @$case;
        my ($r, $calls, $log) = $t->check('/', @$headers);
        is $r->{status}, 401, "$name: 401";
        is $calls, 0, "$name: Kratos not called";
        is scalar @$log, 1, "$name: one log line";
        like $log->[0] // '', qr/\[info\] .*ory_session: .* contains invalid characters while checking session/,
            "$name: says why";
        unlike $log->[0] // '', qr/jane|bob/, "$name: without the value";
    }
    # nginx itself refuses a NUL in a header line, before any module runs.
    for my $headers (["X-Session-Token" => "ory_st_\x00jane"], [Cookie => "ory_kratos_session=jane\x00cookie"]) {
        my ($r, $calls) = $t->check('/', @$headers);
        is $r->{status}, 400, "NUL in $headers->[0]: 400 from nginx";
        is $calls, 0, "NUL in $headers->[0]: Kratos not called";
    }
};

subtest 'duplicate session cookies and tokens: the first one wins, one call' => sub {
    for my $case (
        ['two in one header'      => [Cookie => 'ory_kratos_session=jane-cookie; ory_kratos_session=bob-cookie'], $JANE, 'jane-cookie'],
        ['two Cookie lines'       => [Cookie => ['ory_kratos_session=jane-cookie', 'ory_kratos_session=bob-cookie']], $JANE, 'jane-cookie'],
        ['reversed'               => [Cookie => 'a=1; ory_kratos_session=bob-cookie; b=2; ory_kratos_session=jane-cookie'], $BOB, 'bob-cookie'],
        ['an empty one first'     => [Cookie => 'ory_kratos_session=; ory_kratos_session=bob-cookie'], $BOB, 'bob-cookie'],
        ['quoted first'           => [Cookie => 'ory_kratos_session="jane-cookie"; ory_kratos_session=bob-cookie'], $JANE, 'jane-cookie'],
        ['the same one 100 times' => [Cookie => join '; ', ('ory_kratos_session=jane-cookie') x 100], $JANE, 'jane-cookie'],
    ) {
        my ($name, $headers, $id, $sent) = @$case;
        my ($r, $calls) = $t->check('/', @$headers);
        is $r->{status}, 200, "$name: 200";
        is $r->{json}{headers}{'x-user-id'}, $id, "$name: the first cookie's identity";
        is $calls, 1, "$name: one call";
        is $t->kratos_calls->{requests}[0]{headers}{cookie}, "ory_kratos_session=$sent", "$name: only that cookie is sent";
    }
    my ($r, $calls) = $t->check('/', 'X-Session-Token' => 'ory_st_bob', 'X-Session-Token' => 'ory_st_jane');
    is $r->{json}{headers}{'x-user-id'}, $BOB, 'two X-Session-Token headers: the first wins';
    is $calls, 1, 'one call';
    ($r, $calls) = $t->check('/', 'X-Session-Token' => '', 'X-Session-Token' => 'ory_st_jane');
    is $r->{status}, 401, 'an empty first X-Session-Token hides the second (as Go\'s Header.Get does)';
    is $calls, 0, 'Kratos not called';
};

subtest 'thousands of cookies' => sub {
    my @cases = (
        ['3000 cookies in one header, the session cookie last',
            '/', [Cookie => join('; ', (map { "c$_=v$_" } 1 .. 3000), 'ory_kratos_session=jane-cookie')],
            $JANE, 'ory_kratos_session=jane-cookie'],
        ['3000 near misses of the name first',
            '/', [Cookie => join('; ', (map { ("ory_kratos_session$_=jane-cookie", "Ory_Kratos_Session=x$_",
                "ory_kratos_sessio=y$_", "xory_kratos_session=z$_") } 1 .. 750), 'ory_kratos_session=bob-cookie')],
            $BOB, 'ory_kratos_session=bob-cookie'],
        ['3000 Cookie header lines, the session cookie in the last',
            '/', [Cookie => [(map { "c$_=v$_" } 1 .. 3000), 'ory_kratos_session=bob-cookie']],
            $BOB, 'ory_kratos_session=bob-cookie'],
        ['3000 empty prefix matches, then the session cookie',
            '/prefix/', [Cookie => join('; ', (map { "ory_session_x$_=" } 1 .. 3000), 'ory_session_acme=jane-cookie')],
            $JANE, 'ory_session_acme=jane-cookie'],
    );
    for my $case (@cases) {
        my ($name, $path, $headers, $id, $sent) = @$case;
        my $t0 = time;
        my ($r, $calls, $log) = $t->check($path, @$headers);
        my $took = time - $t0;
        is $r->{status}, 200, "$name: 200";
        is $r->{json}{headers}{'x-user-id'}, $id, "$name: the identity";
        is $calls, 1, "$name: one call";
        is $t->kratos_calls->{requests}[0]{headers}{cookie}, $sent, "$name: only the session cookie is sent";
        is scalar @$log, 0, "$name: nothing logged";
        cmp_ok $took, '<', 1, sprintf '%s: quick (%.3f s)', $name, $took;
    }
};

subtest 'nothing in a Kratos answer adds a header, upstream or downstream' => sub {
    $t->kratos_add_sessions({ sessions => [{
        name => 'smuggler', credentials => ['smuggler-cookie'],
        session => {
            id => "sess\r\nX-Injected-Session: 1",
            authenticated_at => "2026-01-01T00:00:00Z\nX-Injected-Auth: 1",
            identity => {
                # The stub repeats the identity id in a response header of its own (as Kratos
                # does with its UUIDs): a line break there would break the stub's answer, so
                # this one only shows that the id is encoded like every other value.
                id => "evil\tid",
                schema_id => "default\x00X-Injected-Schema: 1",
                state => "active\rX-Injected-State: 1",
                traits => {
                    email => "a\x7f\r\n\tX-Injected-Email: 1",
                    list => ["x\r\nX-Injected-List: 1", 1],
                    uni => "line\x{2028}separator\x{85}next",
                    "name\r\nX-Injected-Name" => 'v',
                },
                metadata_public => { note => "m\r\nX-Injected-Meta: 1", del => "\x7f" },
            },
        },
    }] });
    my ($r, $calls) = $t->check('/', Cookie => 'ory_kratos_session=smuggler-cookie');
    is $r->{status}, 200, 'allowed';
    my $h = $r->{json}{headers};
    is_deeply [sort grep { !/^x-(user-id|sess|aal|auth-at|schema|state|traits|meta|email|list|uni)$/ } keys %$h],
        [qw(connection cookie host)], 'the upstream got no header it was not meant to get';
    is $h->{'x-user-id'}, 'evil%09id', '$ory_user_id encoded';
    is $h->{'x-sess'}, 'sess%0D%0AX-Injected-Session: 1', '$ory_session_id encoded';
    is $h->{'x-auth-at'}, '2026-01-01T00:00:00Z%0AX-Injected-Auth: 1', '$ory_session_authenticated_at encoded';
    is $h->{'x-schema'}, 'default%00X-Injected-Schema: 1', '$ory_identity_schema_id encoded';
    is $h->{'x-state'}, 'active%0DX-Injected-State: 1', '$ory_identity_state encoded';
    is $h->{'x-email'}, 'a%7F%0D%0A%09X-Injected-Email: 1', 'a trait: DEL, CR, LF and tab encoded';
    is $h->{'x-uni'}, "line\x{2028}separator\x{85}next", 'Unicode line separators are not control bytes: kept';
    for my $name (qw(x-traits x-meta x-list)) {
        unlike $h->{$name}, qr/[\x00-\x1f\x7f]/, "$name: no control byte";
        ok eval { JSON::PP->new->decode($h->{$name}); 1 }, "$name: still JSON";
    }
    is_deeply [sort grep { /^x-/i && !/^x-resp-(user|email)$/i } keys %{ $r->{headers} }], [],
        'the client got no injected response header';
    is $r->{headers}{'x-resp-email'}, 'a%7F%0D%0A%09X-Injected-Email: 1', 'add_header: encoded too';
    is $calls, 1, 'one call';
};

is join(',', $t->worker_pids), $WORKER, 'the same worker process served everything';
$t->stop;
done_testing;
