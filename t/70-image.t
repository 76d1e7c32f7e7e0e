# The nginx-ory image, built from the Dockerfile on the Debian base (Debian's nginx) with
# Podman through scripts/image, then run for real: host networking, settings from the
# environment, Kratos stub and echo backend on this machine. Fails (never skips) when the
# image cannot be built or run, with the reason.
#
# The image has a tag of its own and is built without intermediate images (no layer cache):
# at the end the image and the container are removed, and nothing of the test stays in
# Podman's storage but the Debian base image, localhost/debian:bookworm-slim, which
# scripts/image makes once per machine with debootstrap and keeps (it stands in for a pull).
#
# TEST_IMAGE_BASE=official tests the image on the official nginx base instead (it must be
# pullable or present); TEST_IMAGE_BASE_IMAGE names another image to use as that base.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest qw(give_up);

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $BOB  = '6a1f2e3d-4c5b-4a69-8788-99aabbccddee';
my $IMAGE = "$OryTest::TOP/scripts/image";

sub podman (@args) { OryTest::run($IMAGE, 'podman', @args) }

my $tag = "localhost/nginx-ory:t70-$$";
my $name = "nginx-ory-t70-$$";
END {
    local $?;
    podman('rm', '-f', '-t', '0', $name);
    podman('rmi', '-f', $tag);
}

my @build = ('--base', $ENV{TEST_IMAGE_BASE} || 'debian', '--tag', $tag, '--no-layers');
push @build, '--base-image', $ENV{TEST_IMAGE_BASE_IMAGE} if $ENV{TEST_IMAGE_BASE_IMAGE};
my $started = time;
my ($code, $out) = OryTest::run($IMAGE, 'build', @build);
is $code, 0, "scripts/image build @build builds the image"
    or give_up("scripts/image build @build failed (exit $code):\n" . substr($out, -6000));
diag sprintf 'image %s built in %d s', $tag, time - $started;

my $t = OryTest->new;
$t->start_kratos;
my $backend = $t->start_backend;
my $port = $t->port('http');

($code, $out) = podman('run', '-d', '--name', $name, '--network', 'host',
    '-e', "NGINX_PORT=127.0.0.1:$port",
    '-e', 'KRATOS_URL=' . $t->kratos_url,
    '-e', "UPSTREAM_URL=http://127.0.0.1:$backend",
    $tag);
is $code, 0, 'the container starts' or give_up("podman run failed (exit $code):\n$out");

# The probe connection is closed at once: an open one that sends nothing would hold a worker
# for client_header_timeout at the graceful stop below.
my $up = $t->wait_for(sub { !!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1) },
    timeout => 30);
ok $up, "nginx in the container listens on 127.0.0.1:$port"
    or give_up("the container's nginx does not listen:\n" . (podman('logs', $name))[1]);

($code, $out) = podman('exec', $name, 'nginx', '-t');
is $code, 0, 'nginx -t inside the container';
like $out, qr/test is successful/, 'nginx -t: test is successful';
unlike $out, qr/\[(warn|emerg|alert|crit)\]/, 'nginx -t: no warning' or diag $out;
($code, $out) = podman('exec', $name, 'nginx', '-v');
diag "the image's nginx: $out";

my $r = $t->get('/app', Cookie => 'ory_kratos_session=jane-cookie');
is $r->{status}, 200, 'a valid session cookie: 200';
is $r->{json}{headers}{'x-user-id'}, $JANE, 'the upstream gets the user id';
is $r->{json}{headers}{'x-user-email'}, 'jane@example.com', 'and the email trait';

$r = $t->get('/app', 'X-Session-Token' => 'ory_st_bob');
is $r->{status}, 200, 'a valid session token: 200';
is $r->{json}{headers}{'x-user-id'}, $BOB, 'the upstream gets that user id';

is $t->get('/app')->{status}, 401, 'no credential: 401';
is $t->get('/app', Cookie => 'ory_kratos_session=nobody-cookie')->{status}, 401, 'an unknown session: 401';

# Kratos down. A credential not seen before: a cached session would still be let through.
$t->stop_kratos;
is $t->get('/app', Cookie => 'ory_kratos_session=bob-cookie')->{status}, 502, 'Kratos down: 502';

($code, $out) = podman('logs', $name);
like $out, qr/envsubst .*default\.conf\.template/, 'the entrypoint made the configuration from the template';
like $out, qr/\[error\] .*ory_session: /, 'the failure is in the container log';
my @bad = grep { /\[(alert|emerg|crit)\]|exited on signal/ } split /\n/, $out;
ok !@bad, 'the container log has no alert, emerg, crit or crash' or diag join "\n", @bad;

($code, $out) = podman('stop', '-t', '10', $name);
is $code, 0, 'the container stops';
($code, $out) = podman('inspect', '-f', '{{.State.ExitCode}}', $name);
is $out =~ s/\s+//gr, '0', 'nginx exited cleanly (SIGQUIT, graceful)'
    or diag join "\n", grep { !/"GET / } split /\n/, (podman('logs', '--tail', '40', $name))[1];

$t->stop;
done_testing;
