# nginx with the module as the decision service of another gateway, driven through the recipes
# in examples/: the files themselves are tested (ports substituted), so they cannot rot.
#   (a) an nginx auth_request gateway (examples/nginx-auth-request.conf), run for real;
#   (b) Traefik ForwardAuth (examples/traefik-dynamic.yml) and (c) Envoy ext_authz
#       (examples/envoy.yaml), whose requests to the decision service are made here exactly
#       as those proxies make them, from the settings in their example files.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use CPAN::Meta::YAML;
use OryTest;

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $BOB  = '6a1f2e3d-4c5b-4a69-8788-99aabbccddee';
my $LOGIN = 'https://auth.example.com/self-service/login/browser';
my $CHROME = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,'
    . 'image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';
my $EXAMPLES = "$FindBin::Bin/../examples";

sub slurp ($name) {
    open my $fh, '<:raw', "$EXAMPLES/$name" or die "cannot read examples/$name: $!\n";
    local $/;
    return scalar <$fh>;
}

sub yaml ($name) {
    my $doc = CPAN::Meta::YAML->read_string(slurp($name))
        or die "examples/$name: " . CPAN::Meta::YAML->errstr . "\n";
    return $doc->[0];
}

# The example files use the usual local ports: Kratos' public API 4433, the decision
# service 4456, the application 3000, the gateway 80. Each is replaced by a test port; a file
# that no longer has the address it is expected to have fails here rather than test nothing.
my %ROLE = (4433 => 'kratos', 4456 => 'decision', 3000 => 'backend');

sub localize ($t, $text, @expect) {
    for my $port (@expect) {
        die "the example has no 127.0.0.1:$port any more\n" if $port ne '80' && $text !~ /127\.0\.0\.1:$port\b/;
        die "the example has no \"listen 80;\" any more\n" if $port eq '80' && $text !~ /listen 80;/;
    }
    $text =~ s/127\.0\.0\.1:(4433|4456|3000)\b/'127.0.0.1:' . $t->port($ROLE{$1})/ge;
    $text =~ s/listen 80;/'listen 127.0.0.1:' . $t->port('http') . ';'/ge;
    return $text;
}

subtest 'the nginx examples pass nginx -t' => sub {
    for my $case (
        ['decision-service.conf',   1, [4433, 4456]],
        ['nginx-auth-request.conf', 0, [4456, 3000, 80]],
    ) {
        my ($name, $module, $ports) = @$case;
        my $c = OryTest->new;
        $c->write_file("conf/$name", localize($c, slurp($name), @$ports));
        $c->write_config("    include $name;\n", module => $module);
        my ($code, $out) = $c->nginx_test;
        is $code, 0, "$name: nginx -t succeeds" . ($module ? '' : ' (without the module)') or diag $out;
        like $out, qr/test is successful/, "$name: test is successful";
    }
};

my $decision_conf = slurp('decision-service.conf');
my $traefik = yaml('traefik-dynamic.yml')->{http}{middlewares}{'ory-session'}{forwardAuth};
my ($authz) = map { $_->{typed_config} }
    grep { $_->{name} eq 'envoy.filters.http.ext_authz' }
    @{ yaml('envoy.yaml')->{static_resources}{listeners}[0]{filter_chains}[0]{filters}[0]{typed_config}{http_filters} };
my ($envoy_decision) = grep { $_->{name} eq $authz->{http_service}{server_uri}{cluster} }
    @{ yaml('envoy.yaml')->{static_resources}{clusters} };

subtest 'the proxy examples point at the decision service' => sub {
    ok $traefik, 'traefik-dynamic.yml: a forwardAuth middleware';
    my ($path) = ($traefik->{address} // '') =~ m{^http://127\.0\.0\.1:4456(/\S*)$};
    ok $path, 'Traefik asks the decision service' or diag $traefik->{address};
    like $decision_conf, qr/location = \Q$path\E \{/, "which has the location $path";
    ok $authz, 'envoy.yaml: an ext_authz filter';
    is $envoy_decision->{load_assignment}{endpoints}[0]{lb_endpoints}[0]{endpoint}{address}{socket_address}{port_value},
        4456, "Envoy's authorization cluster is the decision service";
    my $prefix = $authz->{http_service}{path_prefix};
    like $decision_conf, qr/location \Q$prefix\E\/ \{/, "which has a location for the path_prefix $prefix";
};

my $t = OryTest->new;
$t->serve(localize($t, $decision_conf, 4433, 4456) . localize($t, slurp('nginx-auth-request.conf'), 4456, 3000, 80));

# Runs $cb with a fresh whoami counter (unless $reset is false); returns its result.
sub fresh ($cb, $reset = 1) { $t->kratos_reset if $reset; return $cb->() }

# ---------------------------------------------------------------------------------------------
# (a) nginx auth_request

subtest '(a) nginx auth_request gateway' => sub {
    my $get = sub (@h) { fresh(sub { $t->get('/orders?id=7', Host => 'app.example.com', @h) }) };

    my $r = $get->(Cookie => 'ory_kratos_session=jane-cookie', Accept => $CHROME, 'X-User-Id' => 'forged');
    is $r->{status}, 200, 'valid cookie: 200';
    is $r->{json}{uri}, '/orders?id=7', 'from the application';
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'with the user id (a forged one replaced)';
    is $r->{json}{headers}{'x-user-email'}, 'jane@example.com', 'and the email';
    is $t->kratos_calls->{count}, 1, 'one whoami call';

    $r = $get->('X-Session-Token' => 'ory_st_bob');
    is $r->{status}, 200, 'valid token: 200';
    is $r->{json}{headers}{'x-user-id'}, $BOB, 'with the user id';

    for my $case (
        ['no credential, API'      => []],
        ['unknown cookie, JSON'    => [Cookie => 'ory_kratos_session=nobody-cookie', Accept => 'application/json']],
        ['unknown token, */*'      => ['X-Session-Token' => 'ory_st_nobody', Accept => '*/*']],
    ) {
        my ($name, $headers) = @$case;
        $r = $get->(@$headers);
        is $r->{status}, 401, "$name: 401";
        ok !exists $r->{headers}{location}, "$name: no Location";
    }

    $r = $get->(Accept => $CHROME);
    is $r->{status}, 303, 'browser without a session: 303';
    is $r->{headers}{location}, "$LOGIN?return_to=http%3A%2F%2Fapp.example.com%2Forders%3Fid%3D7",
        'to the login page, back to the URL asked for';

    $r = fresh(sub { $t->get('/orders?id=7', Host => 'app.example.com:8080', Accept => $CHROME,
        Cookie => 'ory_kratos_session=nobody-cookie') });
    is $r->{status}, 303, 'browser with a rejected session: 303';
    is $r->{headers}{location}, "$LOGIN?return_to=http%3A%2F%2Fapp.example.com%3A8080%2Forders%3Fid%3D7",
        'return_to keeps the port of the Host header';

    $r = $get->(Cookie => 'ory_kratos_session=aal2-required-cookie', Accept => $CHROME);
    is $r->{status}, 403, 'browser, Kratos wants aal2: 403 (no redirect auth_request could not pass on)';

    $r = $get->(Cookie => 'ory_kratos_session=extend-cookie');
    is $r->{status}, 200, 'extended session: 200';
    like $r->{headers}{'set-cookie'} // '', qr/^ory_kratos_session=extend-cookie-2;/,
        "Kratos' Set-Cookie reaches the client";

    is scalar($t->log_lines(qr/auth request unexpected status/)), 0, 'auth_request never got a status it cannot use';

    $t->kratos_reset;
    $t->kratos_behaviour({ mode => 'status', status => 500 });
    $r = $t->get('/orders', Host => 'app.example.com', Cookie => 'ory_kratos_session=bob-new-cookie');
    is $r->{status}, 500, 'Kratos failing: the gateway fails closed (500)';
    ok !$r->{json}, 'and the application is not reached';
    $t->kratos_reset;
};

# ---------------------------------------------------------------------------------------------
# (b) Traefik ForwardAuth: a GET to `address` with every client header but the hop-by-hop
# ones, its own X-Forwarded-*, Go's Accept-Encoding; 2xx allows and copies the
# authResponseHeaders onto the request, anything else is the client's answer.

my @HOP = qw(connection keep-alive proxy-authenticate proxy-authorization te trailers transfer-encoding upgrade);

sub traefik (%c) {
    my ($path) = $traefik->{address} =~ m{^http://[^/]+(/.*)$};
    my @h = @{ $c{headers} };
    my @sent;
    while (my ($n, $v) = splice @h, 0, 2) { push @sent, $n, $v unless grep { lc $n eq $_ } @HOP }
    push @sent,
        'Host'               => '127.0.0.1:' . $t->port('decision'),
        'X-Forwarded-For'    => '203.0.113.9',
        'X-Forwarded-Method' => $c{method} // 'GET',
        'X-Forwarded-Proto'  => 'https',
        'X-Forwarded-Host'   => 'app.example.com',
        'X-Forwarded-Uri'    => $c{uri},
        'Accept-Encoding'    => 'gzip';
    my $r = fresh(sub { $t->request(method => 'GET', path => $path, headers => \@sent, port => $t->port('decision')) });
    # What the application would get: the client's headers, authResponseHeaders replaced.
    my %upstream = map { lc $c{headers}[$_] => $c{headers}[$_ + 1] } grep { !($_ % 2) } 0 .. $#{ $c{headers} };
    if ($r->{status} >= 200 && $r->{status} < 300) {
        for my $name (map { lc } @{ $traefik->{authResponseHeaders} }) {
            delete $upstream{$name};
            $upstream{$name} = $r->{headers}{$name} if exists $r->{headers}{$name};
        }
    }
    $r->{upstream} = \%upstream;
    return $r;
}

subtest '(b) Traefik ForwardAuth' => sub {
    my @client = (method => 'GET', uri => '/orders?id=7');
    my $r = traefik(@client, headers => [Cookie => 'theme=dark; ory_kratos_session=jane-cookie', Accept => $CHROME,
        'User-Agent' => 'Mozilla/5.0', 'X-User-Id' => 'forged', 'X-User-Email' => 'forged@example.com']);
    ok $r->{status} >= 200 && $r->{status} < 300, "valid cookie: 2xx ($r->{status})";
    is $r->{headers}{'x-user-id'}, $JANE, 'X-User-Id in the answer';
    is $r->{upstream}{'x-user-id'}, $JANE, 'the application gets the user id, not the forged one';
    is $r->{upstream}{'x-user-email'}, 'jane@example.com', 'and the email';
    cmp_ok $t->kratos_calls->{count}, '<=', 1, 'at most one whoami call (jane may be cached)';

    $r = traefik(method => 'POST', uri => '/orders', headers => [Authorization => 'Bearer ory_st_bob',
        Accept => 'application/json', 'X-User-Email' => 'forged@example.com', Connection => 'keep-alive']);
    ok $r->{status} >= 200 && $r->{status} < 300, "valid bearer token, POST: 2xx ($r->{status})";
    is $r->{upstream}{'x-user-id'}, $BOB, 'the user id';

    for my $case (
        ['no credential, JSON'  => [Accept => 'application/json']],
        ['unknown cookie, */*'  => [Cookie => 'ory_kratos_session=nobody-cookie', Accept => '*/*']],
        ['no Accept at all'     => []],
    ) {
        my ($name, $headers) = @$case;
        $r = traefik(@client, headers => $headers);
        is $r->{status}, 401, "$name: 401";
        ok !exists $r->{headers}{location}, "$name: no Location";
    }

    $r = traefik(@client, headers => [Accept => $CHROME, Cookie => 'theme=dark']);
    is $r->{status}, 303, 'browser without a session: 303';
    is $r->{headers}{location}, "$LOGIN?return_to=https%3A%2F%2Fapp.example.com%2Forders%3Fid%3D7",
        'return_to is the URL the client asked Traefik for';

    $r = traefik(@client, headers => [Accept => $CHROME, Cookie => 'ory_kratos_session=aal2-required-cookie']);
    is $r->{status}, 303, 'browser, Kratos wants aal2: 303';
    is $r->{headers}{location}, "$LOGIN?aal=aal2&return_to=https%3A%2F%2Fapp.example.com%2Forders%3Fid%3D7",
        'to the login page with aal=aal2';

    $r = traefik(@client, headers => [Accept => 'application/json', Cookie => 'ory_kratos_session=aal2-required-cookie']);
    is $r->{status}, 403, 'API client, Kratos wants aal2: 403';

    # Kratos sends Set-Cookie with the whoami answer: a credential not cached yet.
    $r = traefik(@client, headers => [Cookie => 'ory_kratos_session=extend-cookie-2']);
    ok $r->{status} >= 200 && $r->{status} < 300, "extended session: 2xx ($r->{status})";
    my ($cookie) = ($r->{headers}{'set-cookie'} // '') =~ /^([^=;]+)=/;
    ok $cookie && grep({ $_ eq $cookie } @{ $traefik->{addAuthCookiesToResponse} // [] }),
        'the refreshed cookie is one addAuthCookiesToResponse passes on';
};

# ---------------------------------------------------------------------------------------------
# (c) Envoy ext_authz, http_service: the client's method, path_prefix + the client's path,
# Host (:authority), Content-Length: 0, Authorization and the allowed_headers. Only a 200
# allows; allowed_upstream_headers are then set on the request. Any other status goes to the
# client, a 5xx becoming status_on_error.

my %HTTP_STATUS = (ServiceUnavailable => 503, Forbidden => 403);

sub envoy (%c) {
    my %allowed = map { $_ => 1 } 'authorization', map { $_->{exact} } @{ $authz->{allowed_headers}{patterns} };
    my @h = @{ $c{headers} };
    my @sent = (Host => 'app.example.com', 'Content-Length' => 0);
    while (my ($n, $v) = splice @h, 0, 2) { push @sent, lc $n, $v if $allowed{lc $n} }
    my $path = $authz->{http_service}{path_prefix} . $c{path};
    my $r = fresh(sub { $t->request(method => $c{method}, path => $path, headers => \@sent, port => $t->port('decision')) },
        $c{reset} // 1);
    my %upstream = map { lc $c{headers}[$_] => $c{headers}[$_ + 1] } grep { !($_ % 2) } 0 .. $#{ $c{headers} };
    if ($r->{status} == 200) {
        for my $name (map { $_->{exact} } @{ $authz->{http_service}{authorization_response}{allowed_upstream_headers}{patterns} }) {
            $upstream{$name} = $r->{headers}{$name} if exists $r->{headers}{$name};
        }
        $r->{client_status} = 'upstream';
    } else {
        $r->{client_status} = $r->{status} >= 500 ? $HTTP_STATUS{ $authz->{status_on_error}{code} } // 403 : $r->{status};
    }
    $r->{upstream} = \%upstream;
    return $r;
}

subtest '(c) Envoy ext_authz' => sub {
    my $r = envoy(method => 'GET', path => '/orders?id=7',
        headers => [cookie => 'ory_kratos_session=jane-cookie', accept => $CHROME, 'x-user-id' => 'forged']);
    is $r->{status}, 200, 'valid cookie: 200 exactly';
    is $r->{headers}{'x-user-id'}, $JANE, 'x-user-id in the answer';
    is $r->{upstream}{'x-user-id'}, $JANE, 'the application gets it, not the forged one';
    cmp_ok $t->kratos_calls->{count}, '<=', 1, 'at most one whoami call (jane may be cached)';

    $r = envoy(method => 'POST', path => '/orders', headers => [authorization => 'Bearer ory_st_bob']);
    is $r->{status}, 200, 'valid bearer token, POST: 200';
    is $r->{headers}{'x-user-id'}, $BOB, 'x-user-id';

    $r = envoy(method => 'DELETE', path => '/', headers => ['x-session-token' => 'ory_st_jane']);
    is $r->{status}, 200, 'valid X-Session-Token, DELETE /: 200';
    is $r->{headers}{'x-user-id'}, $JANE, 'x-user-id';

    for my $case (
        ['no credential'            => []],
        ['unknown cookie'           => [cookie => 'ory_kratos_session=nobody-cookie']],
        ['unknown token, a browser' => ['x-session-token' => 'ory_st_nobody', accept => $CHROME]],
    ) {
        my ($name, $headers) = @$case;
        $r = envoy(method => 'GET', path => '/orders?id=7', headers => $headers);
        is $r->{status}, 401, "$name: 401";
        is $r->{client_status}, 401, "$name: the client gets the 401";
    }

    $t->kratos_behaviour({ mode => 'status', status => 500 });
    $r = envoy(method => 'GET', path => '/orders', headers => [cookie => 'ory_kratos_session=alice-new-cookie'], reset => 0);
    $t->kratos_reset;
    is $r->{status}, 502, 'Kratos failing: the decision service answers 502';
    is $r->{client_status}, 503, 'which Envoy turns into status_on_error (503): fails closed';
};

$t->stop;
done_testing;
