# `nginx -t` catches every configuration mistake with a message naming the directive, the
# problem and the place.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $t = OryTest->new;

# Writes an http block, runs `nginx -t`, returns (exit code, output).
sub nginx_t ($http) {
    $t->write_config($http);
    return $t->nginx_test;
}

sub server ($location) {
    return "server {\n listen 127.0.0.1:%%HTTP_PORT%%;\n location / {\n$location\n }\n}\n";
}

my ($code, $out) = nginx_t(<<'EOF');
    ory_session_kratos_url http://127.0.0.1:4433;
    ory_session_cookie ory_session_*;
    ory_session_timeout 500ms;
    ory_session_cache_size 0;
    ory_session_cache_ttl 0;
    ory_session_cache_negative_ttl 1m;
    ory_session_max_pending 10;
    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        location / { ory_session on; }
        location /off/ { ory_session off; }
        location /other/ {
            ory_session on;
            ory_session_kratos_url https://auth.example.com/.ory;
            ory_session_cookie my_session;
            ory_session_timeout 2s;
        }
    }
EOF
is $code, 0, 'a configuration using every directive is valid' or diag $out;

for my $case (
    # [name, http block, expected message]
    ['ory_session on without a Kratos URL',
        server("ory_session on;"),
        qr/\[emerg\].*no "ory_session_kratos_url" is defined for the "ory_session" directive in \S+nginx\.conf:\d+/],
    ['ory_session on at http level without a URL',
        "ory_session on;\n" . server("proxy_pass http://127.0.0.1:1;"),
        qr/no "ory_session_kratos_url" is defined for the "ory_session" directive in \S+nginx\.conf:\d+/],
    ['a URL with an unknown scheme',
        server("ory_session_kratos_url ftp://kratos:4433;"),
        qr/invalid value "ftp:\/\/kratos:4433" in "ory_session_kratos_url" directive, .*http or https.* in \S+nginx\.conf:\d+/],
    ['a URL that does not parse',
        server("ory_session_kratos_url http://exa%20mple/;"),
        qr/invalid value "http:\/\/exa%20mple\/" in "ory_session_kratos_url" directive, invalid URL/],
    ['a URL without a scheme',
        server("ory_session_kratos_url 127.0.0.1:4433;"),
        qr/invalid value "127\.0\.0\.1:4433" in "ory_session_kratos_url" directive, the scheme is missing \(http:\/\/ or https:\/\/\) in \S+nginx\.conf:\d+/],
    ['a host name without a scheme',
        server("ory_session_kratos_url kratos:4433;"),
        qr/invalid value "kratos:4433" in "ory_session_kratos_url" directive, the scheme is missing/],
    ['a URL with a query',
        server("ory_session_kratos_url http://kratos/?a=b;"),
        qr/invalid value .* in "ory_session_kratos_url" directive, .*query/],
    ['a URL with credentials',
        server("ory_session_kratos_url http://user:pw\@kratos/;"),
        qr/in "ory_session_kratos_url" directive/],
    ['ory_session with a bad flag',
        server("ory_session yes;"),
        qr/invalid value "yes" in "ory_session" directive, it must be "on" or "off"/],
    ['a bad timeout',
        server("ory_session_timeout 5 seconds;"),
        qr/invalid number of arguments in "ory_session_timeout" directive/],
    ['a timeout that is not a time',
        server("ory_session_timeout soon;"),
        qr/"ory_session_timeout" directive invalid value in \S+nginx\.conf:\d+/],
    ['a zero timeout',
        server("ory_session_timeout 0;"),
        qr/"ory_session_timeout" directive must be greater than zero in \S+nginx\.conf:\d+/],
    ['a bad cache TTL',
        server("ory_session_cache_ttl -1;"),
        qr/"ory_session_cache_ttl" directive invalid value/],
    ['a bad cookie name',
        server("ory_session_cookie 'a b';"),
        qr/invalid value "a b" in "ory_session_cookie" directive/],
    ['an empty cookie prefix',
        server("ory_session_cookie *;"),
        qr/invalid value "\*" in "ory_session_cookie" directive/],
    ['a cache size that is not a number',
        "ory_session_cache_size lots;\n",
        qr/"ory_session_cache_size" directive invalid number/],
    ['a cache size too large',
        "ory_session_cache_size 20000000;\n",
        qr/"ory_session_cache_size" directive must be between 0 and 10000000/],
    ['the cache size is per http block',
        server("ory_session_cache_size 10;"),
        qr/"ory_session_cache_size" directive is not allowed here/],
    ['max_pending zero',
        "ory_session_max_pending 0;\n",
        qr/"ory_session_max_pending" directive must be between 1 and 10000000 in \S+nginx\.conf:\d+/],
    ['an unknown assurance level',
        server("ory_session_aal aal3;"),
        qr/invalid value "aal3" in "ory_session_aal" directive, it must be "aal1" or "aal2"/],
    ['hide_credentials takes on or off',
        server("ory_session_hide_credentials yes;"),
        qr/invalid value "yes" in "ory_session_hide_credentials" directive, it must be "on" or "off"/],
    ['a flag with two arguments',
        server("ory_session_hide_credentials on off;"),
        qr/invalid number of arguments in "ory_session_hide_credentials" directive/],
    ['a duplicate directive',
        server("ory_session_timeout 1s; ory_session_timeout 2s;"),
        qr/"ory_session_timeout" directive is duplicate/],
    ['a duplicate URL',
        server("ory_session_kratos_url http://a; ory_session_kratos_url http://b;"),
        qr/"ory_session_kratos_url" directive is duplicate/],
) {
    my ($name, $http, $expect) = @$case;
    my ($code, $out) = nginx_t($http);
    isnt $code, 0, "$name: nginx -t fails";
    like $out, $expect, "$name: the message says what and where";
}

subtest 'nginx -t of a valid configuration says nothing of the module' => sub {
    # The Kratos client starts in worker processes only; configuration time must stay quiet.
    my ($code, $out) = nginx_t(<<'EOF');
        ory_session_kratos_url http://127.0.0.1:%%PORT_nothing%%;
        ory_session on;
        server { listen 127.0.0.1:%%HTTP_PORT%%; location / { proxy_pass http://127.0.0.1:1; } }
EOF
    is $code, 0, 'valid';
    unlike $out, qr/ory_session/, 'nothing logged by the module';
};

done_testing;
