# HTTPS to Ory's APIs: the system's store by default, the CA an operator names with
# ory_session_trusted_certificate (and its OAuth2 and Keto twins), every certificate problem a
# 502 with a log line naming it, and HTTP/2 over ALPN. The HTTPS services are server blocks
# of the nginx under test, in front of the Kratos and Keto doubles, with certificates made
# here by openssl.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';

my $t = OryTest->new;
my $dir = $t->prefix . '/conf';

# A private CA, and server certificates it signs: for 127.0.0.1, for another name, expired.
sub openssl (@args) {
    my ($code, $out) = OryTest::run('openssl', @args);
    die "openssl @args failed:\n$out" if $code;
}
openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-subj', '/CN=nginx-ory test CA', '-days', '3650', '-keyout', "$dir/ca.key", '-out', "$dir/ca.pem");
$t->write_file('conf/ca.cnf', <<"EOF");
[ca]
default_ca = test
[test]
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
EOF
$t->write_file('conf/index.txt', '');
$t->write_file('conf/serial', "1000\n");
sub server_cert ($name, $san, @dates) {
    openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', "/CN=$name",
        '-addext', "subjectAltName=$san", '-keyout', "$dir/$name.key", '-out', "$dir/$name.csr");
    openssl('ca', '-batch', '-config', "$dir/ca.cnf", '-cert', "$dir/ca.pem", '-keyfile', "$dir/ca.key",
        '-in', "$dir/$name.csr", '-out', "$dir/$name.pem", @dates);
}
server_cert('good', 'IP:127.0.0.1,DNS:localhost', '-days', '30');
server_cert('other-name', 'DNS:wrong.example.com', '-days', '30');
server_cert('expired', 'IP:127.0.0.1', '-startdate', '20200101000000Z', '-enddate', '20200102000000Z');
$t->write_file('conf/not-a-cert.pem', "just text\n");

$t->start_kratos;
$t->start_backend;
$t->start_keto(tuples => ["documents:readme#viewer\@$JANE"]);
$t->write_config(<<'EOF');
    log_format proto '$server_port $server_protocol $status';

    # The HTTPS services: the doubles behind TLS, one server block per certificate.
    server {
        listen 127.0.0.1:%%PORT_tls_good%% ssl;
        http2 on;
        ssl_certificate good.pem;
        ssl_certificate_key good.key;
        access_log logs/tls.log proto;
        location /relation-tuples/ { proxy_pass %%KETO_URL%%; }
        location / { proxy_pass %%KRATOS_URL%%; }
    }
    server {
        listen 127.0.0.1:%%PORT_tls_other%% ssl;
        ssl_certificate other-name.pem;
        ssl_certificate_key other-name.key;
        location / { proxy_pass %%KRATOS_URL%%; }
    }
    server {
        listen 127.0.0.1:%%PORT_tls_expired%% ssl;
        ssl_certificate expired.pem;
        ssl_certificate_key expired.key;
        location / { proxy_pass %%KRATOS_URL%%; }
    }

    ory_session_cache_size 0;
    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        proxy_set_header X-User-Id $ory_user_id;

        location /trusted/ {
            ory_session on;
            ory_session_kratos_url https://127.0.0.1:%%PORT_tls_good%%;
            ory_session_trusted_certificate ca.pem;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /system-store/ {
            ory_session on;
            ory_session_kratos_url https://127.0.0.1:%%PORT_tls_good%%;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /wrong-name/ {
            ory_session on;
            ory_session_kratos_url https://127.0.0.1:%%PORT_tls_other%%;
            ory_session_trusted_certificate ca.pem;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /expired/ {
            ory_session on;
            ory_session_kratos_url https://127.0.0.1:%%PORT_tls_expired%%;
            ory_session_trusted_certificate ca.pem;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /permission/ {
            ory_session on;
            ory_session_kratos_url %%KRATOS_URL%%;
            ory_permission_url https://127.0.0.1:%%PORT_tls_good%%;
            ory_permission_trusted_certificate ca.pem;
            ory_permission documents readme viewer;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF
$t->start_nginx;

my @jane = (Cookie => 'ory_kratos_session=jane-cookie');

sub one ($path) {
    my $before = () = $t->log_lines(qr/ory_(session|permission): /);
    my $r = $t->get($path, @jane);
    my @lines = $t->log_lines(qr/ory_(session|permission): /);
    return ($r, join "\n", @lines[$before .. $#lines]);
}

subtest 'the CA the operator names is trusted' => sub {
    my ($r, $log) = one('/trusted/x');
    is $r->{status}, 200, 'answered 200';
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'the session came over HTTPS';
    is $log, '', 'nothing logged';
};

subtest 'HTTP/2 to the service over ALPN' => sub {
    my @lines = grep { /^\d+ / } split /\n/, OryTest::_slurp($t->prefix . '/logs/tls.log');
    my $port = $t->port('tls_good');
    ok scalar(grep { /^$port HTTP\/2\.0 200$/ } @lines), 'the whoami call used HTTP/2'
        or diag join "\n", @lines;
};

subtest 'certificate problems: 502, and the log says which' => sub {
    for my $case (
        ['a CA the system does not know', '/system-store/x', qr/UnknownIssuer|unknown issuer/i],
        ['a certificate for another name', '/wrong-name/x', qr/NotValidForName|not valid for name/i],
        ['an expired certificate', '/expired/x', qr/Expired/i],
    ) {
        my ($name, $path, $reason) = @$case;
        my ($r, $log) = one($path);
        is $r->{status}, 502, "$name: 502";
        like $log, qr/\[error\] .*ory_session: Kratos is unreachable \(.*invalid peer certificate.*\) while checking session/,
            "$name: logged at error";
        like $log, $reason, "$name: the reason";
    }
};

subtest 'the permission check trusts its own CA' => sub {
    my ($r, $log) = one('/permission/x');
    is $r->{status}, 200, 'Keto over HTTPS allowed it';
    is $log, '', 'nothing logged';
};

subtest 'nginx -t reads the file' => sub {
    my $c = OryTest->new;
    $c->write_file('conf/not-a-cert.pem', "just text\n");
    for my $case (
        ['a missing file', 'ory_session_trusted_certificate missing.pem;',
            qr/invalid value "missing.pem" in "ory_session_trusted_certificate" directive, cannot read "\S+missing.pem": .* in \S+nginx\.conf:\d+/],
        ['a file without a certificate', 'ory_oauth2_trusted_certificate not-a-cert.pem;',
            qr/invalid value "not-a-cert.pem" in "ory_oauth2_trusted_certificate" directive, the file holds no PEM certificate/],
        ['twice', 'ory_permission_trusted_certificate a.pem; ory_permission_trusted_certificate b.pem;',
            qr/"ory_permission_trusted_certificate" directive is duplicate|cannot read/],
    ) {
        my ($name, $directive, $expect) = @$case;
        $c->write_config("server { listen 127.0.0.1:%%HTTP_PORT%%; location / { $directive } }");
        my ($code, $out) = $c->nginx_test;
        isnt $code, 0, "$name: nginx -t fails";
        like $out, $expect, "$name: the message says what and where";
    }
};

done_testing;
