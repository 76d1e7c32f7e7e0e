# The module built for the distribution's own nginx (Debian's /usr/sbin/nginx, from its
# nginx-dev sources) with scripts/build-for-nginx, then the core outcomes against that nginx.
# Installs nginx and nginx-dev with apt-get when they are missing (without starting the
# service); every step that cannot run fails the test with its reason.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest qw(give_up);

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $BOB  = '6a1f2e3d-4c5b-4a69-8788-99aabbccddee';
my $NGINX = '/usr/sbin/nginx';

my $started = time;
my ($code, $out) = OryTest::run("$OryTest::TOP/scripts/build-for-nginx", $NGINX, '--install-distro');
my ($so) = $out =~ /([^\n]+)\n?\z/;
ok !$code && $so && -f $so, 'scripts/build-for-nginx built the module for the distribution nginx'
    or give_up("scripts/build-for-nginx $NGINX --install-distro failed (exit $code):\n$out");
diag sprintf 'built in %d s: %s', time - $started, $so;
my ($version) = `$NGINX -v 2>&1` =~ m{nginx/(\S+)};
diag "testing $NGINX (nginx $version)";

# OryTest reads these when it first needs the binary and the module.
$ENV{TEST_NGINX_BINARY} = $NGINX;
$ENV{TEST_ORY_MODULE} = $so;

my $t = OryTest->new;
$t->start_kratos;
$t->start_backend;
$t->write_config(<<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_session_cache_size 0;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;

        location / {
            ory_session on;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_set_header X-User-Email $ory_trait_email;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF
my ($rc, $test) = $t->nginx_test;
is $rc, 0, 'nginx -t accepts the module and its directives' or diag $test;
$t->start_nginx;

my $r = $t->get('/app', Cookie => 'ory_kratos_session=jane-cookie');
is $r->{status}, 200, 'a valid session cookie: 200';
is $r->{json}{headers}{'x-user-id'}, $JANE, 'the upstream gets the user id';
like $r->{json}{headers}{'x-user-email'} // '', qr/\@/, 'and a trait';

$r = $t->get('/app', 'X-Session-Token' => 'ory_st_bob');
is $r->{status}, 200, 'a valid session token: 200';
is $r->{json}{headers}{'x-user-id'}, $BOB, 'the upstream gets that user id';

is $t->get('/app', Cookie => 'ory_kratos_session=nobody-cookie')->{status}, 401, 'an unknown session: 401';
is $t->get('/app')->{status}, 401, 'no credential: 401';

$t->kratos_behaviour({mode => 'status', status => 500});
is $t->get('/app', Cookie => 'ory_kratos_session=jane-cookie')->{status}, 502, 'Kratos answers 500: 502';
$t->kratos_reset;
is $t->get('/app', Cookie => 'ory_kratos_session=jane-cookie')->{status}, 200, 'Kratos back: 200';

$t->stop;
done_testing;
