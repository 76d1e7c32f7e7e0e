# The recipes of docs/recipes.md, run as they are written there (ports and paths substituted),
# so that the documentation cannot drift from what nginx does:
#   CORS: the preflight is answered before the check, without a cookie; the request itself is
#     checked, and its 401 carries the CORS headers;
#   a whole server protected: /healthz and /static/ are public, nothing else (nor a look-alike
#     URL) is;
#   error_page: custom 401 and 403 pages, the identity still known on the 403 page; an error page
#     location that is checked again does not loop, it ends with nginx's own page;
#   HTTP/2 over TLS (and h2c): redirects, 401, cookie crumbs joined and hidden, a slow whoami
#     holding up no other stream, 1000 requests on one connection costing one whoami call.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use OryTest;

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $BOB  = '6a1f2e3d-4c5b-4a69-8788-99aabbccddee';
my $CHROME = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,'
    . 'image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';
my $LOGIN = 'https://auth.example.com/self-service/login/browser';

my $t = OryTest->new;
my $prefix = $t->prefix;

# The ```nginx block after each <!-- recipe: NAME --> of docs/recipes.md.
my $doc = OryTest::_slurp("$OryTest::TOP/docs/recipes.md");
my %recipe;
$recipe{$1} = $2 while $doc =~ /^<!-- recipe: (\S+) -->\n```nginx\n(.*?)^```$/msg;
is_deeply [sort keys %recipe], [qw(cors error-page http2 server)], 'docs/recipes.md has its four recipes';

# A recipe with this test's ports and paths; a recipe that lost an address the test replaces
# fails here, instead of testing something else.
sub localize ($name, @expect) {
    my $text = $recipe{$name} // die "docs/recipes.md has no recipe $name\n";
    my %from = (
        'listen 80;'      => 'listen 127.0.0.1:' . $t->port($name) . ';',
        'listen 443 ssl;' => 'listen 127.0.0.1:' . $t->port($name) . ' ssl;',
        '127.0.0.1:3000'  => '127.0.0.1:' . $t->port('backend'),
        '/srv/www'        => "$prefix/html",
        '/etc/nginx/tls/' => "$prefix/conf/",
    );
    for my $s (@expect) {
        die "recipe $name has no \"$s\" any more\n" unless index($text, $s) >= 0;
        $text =~ s/\Q$s\E/$from{$s}/g;
    }
    return $text;
}

mkdir "$prefix/html/$_" for qw(static errors);
$t->write_file('html/static/app.css', "body { color: #123; }\n");
$t->write_file('html/errors/401.html', "<!doctype html><title>Please log in</title><p>Please log in first.</p>\n");

my $tls = !system 'sh', '-c', 'openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes '
    . "-days 1 -subj /CN=app.example.com -keyout '$prefix/conf/app.example.com.key' "
    . "-out '$prefix/conf/app.example.com.crt' 2>/dev/null";
ok $tls, 'openssl made a certificate for the HTTP/2 recipe' or OryTest::give_up('no openssl (scripts/deps --test)');

# The HTTP/2 recipe, once more without TLS and with `listen 80`, for h2c.
my $h2c = localize('http2', '127.0.0.1:3000') =~ s{listen 443 ssl;\n}{listen 127.0.0.1:@{[ $t->port('h2c') ]};\n}r
    =~ s{\s*ssl_certificate.*?;\n}{\n}gr;
$t->serve(join "\n", '    ory_session_kratos_url %%KRATOS_URL%%;',
    localize('cors', 'listen 80;', '127.0.0.1:3000'),
    localize('server', 'listen 80;', '127.0.0.1:3000', '/srv/www'),
    localize('error-page', 'listen 80;', '127.0.0.1:3000', '/srv/www'),
    localize('http2', 'listen 443 ssl;', '127.0.0.1:3000', '/etc/nginx/tls/'),
    $h2c,
    # An error page location that forgot `ory_session off`: checked again, it must not loop.
    <<'EOF');
    server {
        listen 127.0.0.1:%%PORT_forgot%%;
        ory_session on;
        location / {
            error_page 401 = @login_ui;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location @login_ui {
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF

# One request to the server of a recipe: (response, whoami calls).
sub ask ($name, $method, $path, @headers) {
    $t->kratos_reset;
    my $r = $t->request(method => $method, path => $path, headers => \@headers, port => $t->port($name));
    return ($r, $t->kratos_calls->{count});
}

sub header_names ($r) { [sort map { lc $_->[0] } @{ $r->{header_list} }] }

subtest 'CORS: the preflight is answered before the check, the request is checked' => sub {
    my @app = (Origin => 'https://app.example.com');
    my ($r, $calls) = ask('cors', OPTIONS => '/api/orders', @app, 'Access-Control-Request-Method' => 'DELETE',
        'Access-Control-Request-Headers' => 'content-type');
    is $r->{status}, 204, 'preflight without a cookie: 204';
    is $calls, 0, 'Kratos not asked';
    my $h = $r->{headers};
    is $h->{'access-control-allow-origin'}, 'https://app.example.com', 'Access-Control-Allow-Origin: the origin';
    is $h->{'access-control-allow-credentials'}, 'true', 'Access-Control-Allow-Credentials: true';
    is $h->{'access-control-allow-methods'}, 'GET, POST, PUT, DELETE', 'Access-Control-Allow-Methods';
    is $h->{'access-control-allow-headers'}, 'Content-Type, X-Session-Token', 'Access-Control-Allow-Headers';
    is $h->{'access-control-max-age'}, '600', 'Access-Control-Max-Age';
    is $h->{vary}, 'Origin', 'Vary: Origin';

    ($r, $calls) = ask('cors', OPTIONS => '/api/orders', Origin => 'https://evil.example',
        'Access-Control-Request-Method' => 'DELETE');
    is $r->{status}, 204, 'preflight from another origin: 204';
    ok !exists $r->{headers}{'access-control-allow-origin'}, 'without Access-Control-Allow-Origin';

    ($r, $calls) = ask('cors', GET => '/api/orders', @app, Accept => '*/*');
    is $r->{status}, 401, 'the request without a cookie: 401';
    is $calls, 0, 'no credential, Kratos not asked';
    is $r->{headers}{'access-control-allow-origin'}, 'https://app.example.com', 'the 401 carries Access-Control-Allow-Origin';
    is $r->{headers}{'access-control-allow-credentials'}, 'true', 'and -Credentials, for the script to read it';

    ($r, $calls) = ask('cors', GET => '/api/orders', @app, Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{status}, 200, 'the request with a session cookie: 200';
    is $calls, 1, 'after one whoami call';
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'the application gets X-User-Id';
    is $r->{headers}{'access-control-allow-origin'}, 'https://app.example.com', 'with Access-Control-Allow-Origin';
    ok !exists $r->{headers}{'access-control-allow-methods'}, 'and none of the preflight\'s headers';

    for my $method (qw(POST DELETE)) {
        ($r) = ask('cors', $method => '/api/orders', @app, 'Content-Length' => 0);
        is $r->{status}, 401, "$method without a cookie: 401 (only OPTIONS skips the check)";
    }
};

subtest 'a whole server protected, /healthz and /static/ public' => sub {
    for my $path ('/', '/reports/q3', '/healthz/x', '/healthzz', '/static/../reports/q3', '/STATIC/app.css') {
        my ($r, $calls) = ask('server', GET => $path);
        is $r->{status}, 401, "$path without a session: 401";
        is $calls, 0, "$path: Kratos not asked (no credential)";
    }
    my ($r) = ask('server', GET => '/reports/q3', Accept => $CHROME, Host => 'app.example.com');
    is $r->{status}, 303, 'a browser: 303';
    is $r->{headers}{location}, "$LOGIN?return_to=http%3A%2F%2Fapp.example.com%2Freports%2Fq3", 'to the login page';

    ($r, my $calls) = ask('server', GET => '/reports/q3', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{status}, 200, 'with a session: 200';
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'the application gets X-User-Id (set at the server level)';

    ($r, $calls) = ask('server', GET => '/healthz');
    is $r->{status}, 200, '/healthz: 200';
    is $r->{json}{uri}, '/healthz', 'from the application';
    is $calls, 0, '/healthz: Kratos not asked';

    ($r, $calls) = ask('server', GET => '/static/app.css');
    is $r->{status}, 200, '/static/app.css: 200';
    is $r->{body}, "body { color: #123; }\n", 'the file';
    is $calls, 0, '/static/: Kratos not asked';
    like $r->{headers}{'cache-control'} // '', qr/max-age=3600/, 'with the expires of the recipe';
};

subtest 'error_page: custom 401 and 403 pages, the decision kept' => sub {
    my ($r, $calls) = ask('error-page', GET => '/');
    is $r->{status}, 401, '/ without a session: 401';
    like $r->{body}, qr/Please log in first/, 'with /errors/401.html';
    is $calls, 0, 'Kratos not asked';

    ($r) = ask('error-page', GET => '/errors/401.html');
    is $r->{status}, 404, 'the error page itself is internal: 404';

    ($r, $calls) = ask('error-page', GET => '/admin/', Cookie => 'ory_kratos_session=bob-cookie');
    is $r->{status}, 403, "Bob's aal1 session at /admin/: 403";
    is $r->{body}, "Signed in as bob\@example.com, but /admin/ needs a second factor.\n",
        'the 403 page knows who he is: the variables survive the internal redirect';
    is $calls, 1, 'after one whoami call';
    like $r->{headers}{'content-type'}, qr{^text/plain}, 'text/plain';

    ($r, $calls) = ask('error-page', GET => '/admin/', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{status}, 200, "Jane's aal2 session at /admin/: 200";
    is $r->{json}{uri}, '/admin/', 'from the application';

    ($r, $calls) = ask('error-page', GET => '/api/orders', Accept => 'application/json');
    is $r->{status}, 401, '/api/ without a session: 401';
    is $r->{body}, qq({"error":"login_required"}\n), 'with the JSON body';
    like $r->{headers}{'content-type'}, qr{^application/json}, 'as application/json';

    my @before = $t->log_lines(qr/ory_session: /);
    ($r, $calls) = ask('forgot', GET => '/page', Cookie => 'ory_kratos_session=nobody-cookie');
    my @after = $t->log_lines(qr/ory_session: /);
    is $r->{status}, 401, 'an error page location that is checked again: still 401, no loop';
    like $r->{body}, qr{<center><h1>401 Authorization Required</h1></center>}, "nginx's own page";
    ok !$r->{json}, 'not the upstream\'s';
    is $calls, 1, 'Kratos asked once: the decision is kept across the redirect';
    is @after - @before, 1, 'one refusal logged';
};

# curl over HTTP/2: (exit code, output).
sub curl (@args) { OryTest::run('curl', '-sS', '--max-time', '20', @args) }

subtest 'HTTP/2' => sub {
    my $port = $t->port('http2');
    my $base = "https://app.example.com:$port";
    my @h2 = ('--http2', '--cacert', "$prefix/conf/app.example.com.crt", '--resolve', "app.example.com:$port:127.0.0.1");
    my $fmt = '\n%{http_version} %{http_code} %{redirect_url}';

    my ($code, $out) = curl(@h2, '-w', $fmt, '--cookie', 'theme=dark; ory_kratos_session=jane-cookie', "$base/x");
    is $code, 0, 'curl over TLS' or diag $out;
    my ($body, $status) = $out =~ /\A(.*)\n(\S+ \S+) ?\S*\z/s;
    is $status, '2 200', 'with a session: HTTP/2, 200';
    my $up = eval { decode_json($body) } // {};
    is $up->{headers}{'x-user-id'}, $JANE, 'the application gets X-User-Id';
    is $up->{headers}{cookie}, 'theme=dark', 'and the cookies without the session cookie';

    ($code, $out) = curl(@h2, '-w', $fmt, '-H', "Accept: $CHROME", "$base/orders?id=7");
    like $out, qr{\n2 303 \Q$LOGIN?return_to=https%3A%2F%2Fapp.example.com%3A$port%2Forders%3Fid%3D7\E\z},
        'a browser without a session: 303 to the login page, return_to from :authority';
    ($code, $out) = curl(@h2, '-w', $fmt, "$base/orders");
    like $out, qr{\n2 401 \z}, 'an API client: 401';

    # Browsers send each cookie in a cookie field of its own over HTTP/2.
    ($code, $out) = OryTest::run('nghttp', '-H', 'cookie: a=1', '-H', 'cookie: ory_kratos_session=bob-cookie',
        '-H', 'cookie: b=2', "https://127.0.0.1:$port/crumbs");
    my ($json) = $out =~ /^(\{.*\})$/m;    # nghttp warns that the certificate is not 127.0.0.1's
    $up = eval { decode_json($json) } // {};
    is $up->{headers}{'x-user-id'}, $BOB, 'cookie crumbs: the session cookie is found' or diag $out;
    is $up->{headers}{cookie}, 'a=1; b=2', 'and cut out of the joined Cookie header';

    # A slow whoami does not hold up another stream of the connection.
    ($code, $out) = curl(@h2, '--parallel', '-w', '%{http_code} %{num_connects} %{time_total} %{url_effective}\n',
        '-o', '/dev/null', '--cookie', 'ory_kratos_session=slow-cookie', "$base/slow",
        '--next', @h2, '-w', '%{http_code} %{num_connects} %{time_total} %{url_effective}\n',
        '-o', '/dev/null', '--cookie', 'ory_kratos_session=jane-cookie', "$base/fast");
    my %took = map { (m{(\S+)$} ? $1 =~ s{.*/}{}r : '?') => [split ' '] } split /\n/, $out;
    is $took{slow}[0], 200, 'the slow session: 200' or diag $out;
    is $took{fast}[0], 200, 'the cached session: 200';
    is $took{slow}[1] + $took{fast}[1], 1, 'one connection for both';
    ok $took{slow}[2] >= 1.4, "the slow one took the whoami's 1.5 s ($took{slow}[2] s)";
    ok $took{fast}[2] < 1, "the other did not wait for it ($took{fast}[2] s)";

    my ($user) = $t->users(1, 100);
    $t->kratos_reset;
    ($code, $out) = OryTest::run('h2load', '-n', 1000, '-c', 1, '-m', 10, '-H', "cookie: ory_kratos_session=$user->{cookie}",
        "https://127.0.0.1:$port/load");
    like $out, qr/status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx/, 'h2load, 1000 requests, 10 streams at a time: all 200'
        or diag $out;
    like $out, qr/(?:^|\n)requests: 1000 total, 1000 started, 1000 done, 1000 succeeded/, 'all done';
    is $t->kratos_calls->{count}, 1, 'one whoami call for all of them';

    ($code, $out) = curl('--http2-prior-knowledge', '-w', $fmt, '--cookie', 'ory_kratos_session=jane-cookie',
        'http://127.0.0.1:' . $t->port('h2c') . '/x');
    like $out, qr/\n2 200 \z/, 'h2c (listen 80, http2 on): HTTP/2, 200';
    ($code, $out) = curl('--http1.1', '-w', $fmt, 'http://127.0.0.1:' . $t->port('h2c') . '/x');
    like $out, qr/\n1\.1 401 \z/, 'and HTTP/1.1 on the same port: 401 without a session';
};

done_testing;
