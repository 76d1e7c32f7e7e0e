# Browser flows: a browser navigation without a valid session is sent to the login page with
# the exact URL it asked for in `return_to`, any other client keeps its 401; authenticator
# assurance levels (ours and Kratos' own 403) step browsers up; the session JWT reaches the
# upstream and bounds the cache; credentials can be hidden from the upstream; a cookie
# refreshed by Kratos reaches the client.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use MIME::Base64 qw(encode_base64url);
use Time::HiRes qw(time sleep);
use OryTest;

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $BOB  = '6a1f2e3d-4c5b-4a69-8788-99aabbccddee';
my $LOGIN = 'https://login.example.com/ui/login';
my $KRATOS_STEP_UP = 'https://auth.example.com/self-service/login/browser?aal=aal2';

# What browsers send when the user follows a link or types a URL.
my $CHROME = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,'
    . 'image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';
my $FIREFOX = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

my $t = OryTest->new;

# An https server, for the scheme of return_to. The test client speaks plain HTTP: a plain
# server of the same nginx forwards to it over TLS, passing the Host header on.
my $tls = !system 'sh', '-c', 'command -v openssl >/dev/null && openssl req -x509 -newkey ec '
    . '-pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=app.example.com '
    . "-keyout '" . $t->prefix . "/conf/tls.key' -out '" . $t->prefix . "/conf/tls.crt' 2>/dev/null";
my $TLS_SERVERS = !$tls ? '' : <<'EOF';
    server {
        listen 127.0.0.1:%%PORT_tls%% ssl;
        ssl_certificate     tls.crt;
        ssl_certificate_key tls.key;
        location / {
            ory_session on;
            ory_session_login_url https://login.example.com/ui/login;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
    server {
        listen 127.0.0.1:%%PORT_tlsfront%%;
        location / {
            proxy_pass https://127.0.0.1:%%PORT_tls%%;
            proxy_set_header Host $http_host;
        }
    }
EOF
$t->serve($TLS_SERVERS . <<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;

        proxy_set_header X-User-Id $ory_user_id;
        proxy_set_header X-Cache   $ory_session_cache_status;

        location / {
            ory_session on;
            ory_session_login_url https://login.example.com/ui/login;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /nologin/ {
            ory_session on;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /tenant/ {
            ory_session on;
            ory_session_login_url "https://${http_x_tenant}.login.example.com/ui/login?flow=browser";
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /existing/ {
            ory_session on;
            ory_session_login_url "https://login.example.com/ui/login?return_to=https%3A%2F%2Fapp.example.com%2Fhome";
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /mfa/ {
            ory_session on;
            ory_session_aal aal2;
            ory_session_login_url https://login.example.com/ui/login;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /mfa-nologin/ {
            ory_session on;
            ory_session_aal aal2;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /jwt/ {
            ory_session on;
            ory_session_tokenize_as jwt_example;
            proxy_set_header X-User-Id     $ory_user_id;
            proxy_set_header X-Cache       $ory_session_cache_status;
            proxy_set_header Authorization "Bearer $ory_session_jwt";
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /short/ {
            ory_session on;
            ory_session_tokenize_as short;
            proxy_set_header X-Cache       $ory_session_cache_status;
            proxy_set_header Authorization "Bearer $ory_session_jwt";
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /hide/ {
            ory_session on;
            ory_session_hide_credentials on;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /hide-prefix/ {
            ory_session on;
            ory_session_cookie ory_session_*;
            ory_session_hide_credentials on;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF

# $t->check, for the host app.example.com unless the headers name another.
sub check ($path, @headers) {
    my $has_host = grep { !($_ % 2) && lc $headers[$_] eq 'host' } 0 .. $#headers;
    return $t->check($path, ($has_host ? () : (Host => 'app.example.com')), @headers);
}

sub login_location ($return_to, %o) {
    my $base = $o{base} // $LOGIN;
    my $sep = $base =~ /\?/ ? '&' : '?';
    return $base . $sep . ($o{aal} ? "aal=$o{aal}&" : '') . 'return_to=' . $return_to;
}

subtest 'browser navigations are redirected, other clients get 401' => sub {
    for my $case (
        ['Chrome'             => $CHROME,                              303],
        ['Firefox'            => $FIREFOX,                             303],
        ['plain text/html'    => 'text/html',                          303],
        ['*/*'                => '*/*',                                401],
        ['application/json'   => 'application/json',                   401],
        ['axios'              => 'application/json, text/plain, */*',  401],
        ['JSON preferred'     => 'application/json, text/html;q=0.5',  401],
        ['no Accept'          => undef,                                401],
    ) {
        my ($name, $accept, $status) = @$case;
        my ($r, $calls, $log) = check('/dashboard', defined $accept ? (Accept => $accept) : ());
        is $r->{status}, $status, "$name: $status";
        is $calls, 0, "$name: Kratos not asked (no credential)";
        is scalar @$log, 1, "$name: logged once";
        if ($status == 303) {
            like $r->{raw}, qr{^HTTP/1\.1 303 See Other\r\n}, "$name: 303 See Other";
            is $r->{headers}{location}, login_location('http%3A%2F%2Fapp.example.com%2Fdashboard'),
                "$name: Location is the login URL with return_to";
        } else {
            ok !exists $r->{headers}{location}, "$name: no Location";
        }
    }

    my ($r, $calls) = check('/dashboard', Accept => $CHROME, Cookie => 'ory_kratos_session=nobody-cookie');
    is $r->{status}, 303, 'a session Kratos rejects: redirected too';
    is $calls, 1, 'after asking Kratos once';
    ($r) = check('/dashboard', Accept => 'application/json', Cookie => 'ory_kratos_session=nobody-cookie-2');
    is $r->{status}, 401, 'and an API client with that kind of session gets 401';

    ($r) = check('/nologin/dashboard', Accept => $CHROME);
    is $r->{status}, 401, 'no ory_session_login_url: browsers get 401 too';
    ok !exists $r->{headers}{location}, 'without a Location';
};

subtest 'return_to is the URL exactly as the browser asked for it' => sub {
    for my $case (
        ['query with & and =' => '/search?q=a&b=c=d',
            'http%3A%2F%2Fapp.example.com%2Fsearch%3Fq%3Da%26b%3Dc%3Dd'],
        ['raw UTF-8 path and query' => "/caf\xc3\xa9/men\xc3\xbc?x=\xc3\xa9",
            'http%3A%2F%2Fapp.example.com%2Fcaf%C3%A9%2Fmen%C3%BC%3Fx%3D%C3%A9'],
        ['already percent-encoded' => '/a%20b/%C3%A9?next=%2Fhome%3Fx%3D1',
            'http%3A%2F%2Fapp.example.com%2Fa%2520b%2F%25C3%25A9%3Fnext%3D%252Fhome%253Fx%253D1'],
        ['unreserved characters kept' => '/A-Z_a.z~0/',
            'http%3A%2F%2Fapp.example.com%2FA-Z_a.z~0%2F'],
        ['dot segments and double slashes as sent' => '//x/../y/./z',
            'http%3A%2F%2Fapp.example.com%2F%2Fx%2F..%2Fy%2F.%2Fz'],
    ) {
        my ($name, $path, $want) = @$case;
        my ($r) = check($path, Accept => $CHROME);
        is $r->{status}, 303, "$name: 303";
        is $r->{headers}{location}, login_location($want), "$name: return_to";
    }

    my ($r) = check('/x?y=1', Host => 'app.example.com:8443', Accept => $CHROME);
    is $r->{status}, 303, 'Host with a port: 303';
    is $r->{headers}{location}, login_location('http%3A%2F%2Fapp.example.com%3A8443%2Fx%3Fy%3D1'),
        'Host with a port: the port is kept';

    if (!$tls) {
        fail 'over https: openssl made no certificate (scripts/deps --test installs openssl)';
    } else {
        my $r = $t->raw_request("GET /secure/x?z=1 HTTP/1.1\r\nHost: app.example.com\r\nAccept: $CHROME\r\n"
            . "Connection: close\r\n\r\n", port => $t->port('tlsfront'));
        is $r->{status}, 303, 'over https: 303';
        is $r->{headers}{location}, login_location('https%3A%2F%2Fapp.example.com%2Fsecure%2Fx%3Fz%3D1'),
            'over https: the scheme is https';
    }

    # Not UTF-8: a Latin-1 byte must come back as the same byte, percent-encoded.
    ($r) = check("/caf\xe9", Accept => $CHROME);
    is $r->{status}, 303, 'a byte that is not UTF-8: 303';
    is $r->{headers}{location}, login_location('http%3A%2F%2Fapp.example.com%2Fcaf%E9'),
        'a byte that is not UTF-8 is kept as it was sent';
};

subtest 'ory_session_login_url with variables, or with its own return_to' => sub {
    my ($r) = check('/tenant/page?a=1', Accept => $CHROME, 'X-Tenant' => 'acme');
    is $r->{status}, 303, 'variables: 303';
    is $r->{headers}{location},
        'https://acme.login.example.com/ui/login?flow=browser&return_to='
        . 'http%3A%2F%2Fapp.example.com%2Ftenant%2Fpage%3Fa%3D1',
        'variables are evaluated per request, return_to added with &';

    ($r) = check('/existing/page', Accept => $CHROME);
    is $r->{status}, 303, 'existing return_to: 303';
    is $r->{headers}{location}, 'https://login.example.com/ui/login?return_to=https%3A%2F%2Fapp.example.com%2Fhome',
        'a login URL that has return_to is left as it is';
};

subtest 'ory_session_aal aal2: step-up for browsers, 403 for the others' => sub {
    my $return_to = 'http%3A%2F%2Fapp.example.com%2Fmfa%2Fsettings';
    for my $round (1, 2) {    # the second round is answered from the cache
        my ($r, $calls, $log) = check('/mfa/settings', Cookie => 'ory_kratos_session=bob-cookie', Accept => $CHROME);
        is $r->{status}, 303, "round $round: bob (aal1), browser: 303";
        is $r->{headers}{location}, login_location($return_to, aal => 'aal2'),
            "round $round: to the login URL with aal=aal2 then return_to";
        is $calls, $round == 1 ? 1 : 0, "round $round: whoami calls";
        is scalar @$log, 1, "round $round: one log line";
        like $log->[0] // '', qr/\[info\] .*ory_session: .*"aal1".*"aal2".* while checking session/,
            "round $round: at info, with both levels";
    }
    for my $case (
        ['bob, JSON client' => [Cookie => 'ory_kratos_session=bob-cookie', Accept => 'application/json']],
        ['bob, token, no Accept' => ['X-Session-Token' => 'ory_st_bob']],
        ['alice, */*' => [Cookie => 'ory_kratos_session=alice-cookie', Accept => '*/*']],
    ) {
        my ($name, $headers) = @$case;
        my ($r, undef, $log) = check('/mfa/settings', @$headers);
        is $r->{status}, 403, "$name: 403";
        ok !exists $r->{headers}{location}, "$name: no Location";
        is scalar @$log, 1, "$name: logged once";
    }
    my ($r) = check('/mfa-nologin/settings', Cookie => 'ory_kratos_session=bob-cookie', Accept => $CHROME);
    is $r->{status}, 403, 'no login URL: a browser gets 403, never 401';

    for my $case (
        ['jane, browser' => [Cookie => 'ory_kratos_session=jane-cookie', Accept => $CHROME]],
        ['jane, token'   => ['X-Session-Token' => 'ory_st_jane']],
    ) {
        my ($name, $headers) = @$case;
        my ($r, undef, $log) = check('/mfa/settings', @$headers);
        is $r->{status}, 200, "$name (aal2): 200";
        is $r->{json}{headers}{'x-user-id'}, $JANE, "$name: the upstream gets the user id";
        is scalar @$log, 0, "$name: nothing logged";
    }

    ($r) = check('/page', Cookie => 'ory_kratos_session=bob-cookie', Accept => $CHROME);
    is $r->{status}, 200, 'the same (cached) aal1 session is enough where aal1 is required';
    is $r->{json}{headers}{'x-user-id'}, $BOB, 'with the user id';
};

subtest "Kratos' own 403 (session_aal2_required)" => sub {
    my @aal2 = (Cookie => 'ory_kratos_session=aal2-required-cookie');
    my ($r, $calls, $log) = check('/billing?y=2', @aal2, Accept => $CHROME);
    is $r->{status}, 303, 'with a login URL: browser 303';
    is $r->{headers}{location}, login_location('http%3A%2F%2Fapp.example.com%2Fbilling%3Fy%3D2', aal => 'aal2'),
        'to the login URL with aal=aal2 then return_to';
    is $calls, 1, 'one whoami call';
    is scalar @$log, 1, 'logged once';

    ($r) = check('/nologin/billing', @aal2, Accept => $CHROME);
    is $r->{status}, 303, 'without a login URL: browser 303';
    is $r->{headers}{location},
        login_location('http%3A%2F%2Fapp.example.com%2Fnologin%2Fbilling', base => $KRATOS_STEP_UP),
        "to Kratos' redirect_browser_to with return_to appended";

    for my $path ('/billing', '/nologin/billing') {
        for my $accept ('application/json', undef) {
            my $name = "$path, " . ($accept // 'no Accept');
            ($r) = check($path, @aal2, defined $accept ? (Accept => $accept) : ());
            is $r->{status}, 403, "$name: 403";
            ok !exists $r->{headers}{location}, "$name: no Location";
        }
    }
};

subtest 'tokenize_as: the JWT reaches the upstream, the template reaches Kratos' => sub {
    my $jwt = OryTest->fixture_session('jane')->{tokenize}{jwt_example};
    my ($r, $calls) = check('/jwt/x', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{status}, 200, 'answered 200';
    is $r->{json}{headers}{authorization}, "Bearer $jwt", '$ory_session_jwt is the tokenized session';
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'and the other variables are set';
    is $calls, 1, 'one whoami call';
    my $req = $t->kratos_calls->{requests}[0];
    is $req->{query}, 'tokenize_as=jwt_example', 'whoami was asked for the template';
    is $req->{path}, '/sessions/whoami', 'on the whoami path';
};

subtest 'the cache key includes the template' => sub {
    $t->kratos_add_sessions({ sessions => [{
        name => 'tk', credentials => ['tk-cookie'],
        tokenize => { jwt_example => 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ayJ9.' },
    }] });
    $t->kratos_reset;
    my @tk = (Host => 'app.example.com', Cookie => 'ory_kratos_session=tk-cookie');
    my $plain = $t->get('/nologin/x', @tk);
    my $jwt = $t->get('/jwt/x', @tk);
    is $plain->{status}, 200, 'plain location: 200';
    is $jwt->{status}, 200, 'tokenize location: 200';
    my $calls = $t->kratos_calls;
    is $calls->{count}, 2, 'same cookie at a plain and a tokenize location: 2 whoami calls';
    is_deeply [map { $_->{query} } @{ $calls->{requests} }], ['', 'tokenize_as=jwt_example'],
        'tokenize_as only where it is configured';
    is $jwt->{json}{headers}{authorization}, 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ayJ9.',
        'the tokenize location got the JWT (not the cached plain session)';
    $plain = $t->get('/nologin/x', @tk);
    $jwt = $t->get('/jwt/x', @tk);
    is $t->kratos_calls->{count}, 2, 'both answers are then cached';
    is $plain->{json}{headers}{'x-cache'}, 'HIT', 'plain: HIT';
    is $jwt->{json}{headers}{'x-cache'}, 'HIT', 'tokenize: HIT';
    is $jwt->{json}{headers}{authorization}, 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ayJ9.',
        'the cached JWT is handed out';
};

subtest 'a cached session never outlives its JWT' => sub {
    my $make_jwt = sub ($exp) {
        join '.', encode_base64url('{"alg":"ES256","typ":"JWT"}'),
            encode_base64url(encode_json({ sub => 'short', exp => $exp })), encode_base64url('signature');
    };
    my $add = sub ($jwt) {
        $t->kratos_add_sessions({ sessions => [{
            name => 'shortjwt', credentials => ['shortjwt-cookie'], tokenize => { short => $jwt },
        }] });
    };
    my $first = $make_jwt->(int(time) + 2);
    $add->($first);
    $t->kratos_reset;
    my @h = (Cookie => 'ory_kratos_session=shortjwt-cookie');
    my $r = $t->get('/short/x', @h);
    is $r->{status}, 200, 'answered 200';
    is $r->{json}{headers}{authorization}, "Bearer $first", 'the JWT is handed upstream';
    $r = $t->get('/short/x', @h);
    is $r->{json}{headers}{'x-cache'}, 'HIT', 'reused while the JWT is valid (TTL 60 s)';
    is $t->kratos_calls->{count}, 1, 'one whoami call so far';

    my $second = $make_jwt->(int(time) + 600);
    $add->($second);
    sleep 3;
    $r = $t->get('/short/x', @h);
    is $t->kratos_calls->{count}, 2, 'past the JWT exp: Kratos is asked again';
    is $r->{json}{headers}{'x-cache'}, 'EXPIRED', 'the entry was too old';
    is $r->{json}{headers}{authorization}, "Bearer $second", 'and the new JWT is handed upstream';
};

subtest 'ory_session_hide_credentials on' => sub {
    for my $case (
        ['session cookie among others' => '/hide/x',
            [Cookie => 'theme=dark; ory_kratos_session=jane-cookie; csrf_token=abc'], 'theme=dark; csrf_token=abc'],
        ['session cookie twice' => '/hide/x',
            [Cookie => 'ory_kratos_session=jane-cookie; a=1; ory_kratos_session=stale'], 'a=1'],
        ['two Cookie lines' => '/hide/x',
            [Cookie => ['ory_kratos_session=jane-cookie', 'b=2; c=3']], 'b=2; c=3'],
        ['only the session cookie' => '/hide/x',
            [Cookie => 'ory_kratos_session=jane-cookie'], undef],
        ['prefix-matched cookie name' => '/hide-prefix/x',
            [Cookie => 'ory_session_acme=jane-cookie; theme=dark'], 'theme=dark'],
    ) {
        my ($name, $path, $headers, $want) = @$case;
        my ($r) = check($path, @$headers);
        is $r->{status}, 200, "$name: 200";
        is $r->{json}{headers}{'x-user-id'}, $JANE, "$name: authenticated";
        is $r->{json}{headers}{cookie}, $want, "$name: upstream Cookie";
        ok !exists $r->{json}{headers}{cookie}, "$name: no empty Cookie header" unless defined $want;
    }

    my ($r) = check('/hide/x', 'X-Session-Token' => 'ory_st_bob', Cookie => 'theme=dark');
    is $r->{json}{headers}{'x-user-id'}, $BOB, 'token: authenticated';
    ok !exists $r->{json}{headers}{'x-session-token'}, 'token: X-Session-Token removed';
    is $r->{json}{headers}{cookie}, 'theme=dark', 'token: other cookies stay';

    ($r) = check('/hide/x', Authorization => 'Bearer ory_st_jane', Cookie => 'theme=dark');
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'bearer: authenticated';
    ok !exists $r->{json}{headers}{authorization}, 'bearer: Authorization removed';
    is $r->{json}{headers}{cookie}, 'theme=dark', 'bearer: cookies stay';

    ($r) = check('/hide/x', Authorization => 'Basic Zm9vOmJhcg==', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{json}{headers}{authorization}, 'Basic Zm9vOmJhcg==', 'Basic authorization stays';
    ok !exists $r->{json}{headers}{cookie}, 'while the session cookie goes';

    ($r) = check('/hide/x', Authorization => 'Bearer for-the-app', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{json}{headers}{authorization}, 'Bearer for-the-app',
        'a bearer token that was not the credential (the cookie was) stays';

    ($r) = check('/hide/x', 'X-Session-Token' => 'ory_st_bob', Cookie => 'ory_kratos_session=jane-cookie; a=1');
    is $r->{json}{headers}{'x-user-id'}, $BOB, 'token wins over the cookie';
    ok !exists $r->{json}{headers}{'x-session-token'}, 'X-Session-Token removed';
    is $r->{json}{headers}{cookie}, 'a=1', 'the unused session cookie is removed too';
};

subtest 'ory_session_hide_credentials off: everything passes through' => sub {
    my ($r) = check('/nologin/x', Cookie => 'theme=dark; ory_kratos_session=jane-cookie',
        'X-Session-Token' => 'ory_st_bob', Authorization => 'Bearer ory_st_jane');
    is $r->{status}, 200, 'answered 200';
    my $h = $r->{json}{headers};
    is $h->{cookie}, 'theme=dark; ory_kratos_session=jane-cookie', 'Cookie as sent';
    is $h->{'x-session-token'}, 'ory_st_bob', 'X-Session-Token as sent';
    is $h->{authorization}, 'Bearer ory_st_jane', 'Authorization as sent';
};

subtest 'a Set-Cookie from Kratos reaches the client' => sub {
    my ($r, $calls) = check('/nologin/x', Cookie => 'ory_kratos_session=extend-cookie');
    is $r->{status}, 200, 'answered 200';
    is $calls, 1, 'one whoami call';
    my @set = map { $_->[1] } grep { lc $_->[0] eq 'set-cookie' } @{ $r->{header_list} };
    is_deeply \@set, ['ory_kratos_session=extend-cookie-2; Path=/; Expires=Fri, 31 Jul 2026 09:30:36 GMT; '
        . 'Max-Age=86400; HttpOnly; SameSite=Lax'], 'the refreshed session cookie, once';
    is $r->{json}{uri}, '/nologin/x', 'and the upstream answered';
};

$t->stop;
done_testing;
