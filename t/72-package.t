# The Debian package (scripts/package-deb), built for this machine's Debian nginx, then
# installed for real on Debian 12: a Podman container from the Debian base of the image test
# (localhost/debian:bookworm-slim, made once by scripts/image base) with Debian's nginx, and
# the machine's apt sources over host networking. In the container: apt-get install ./….deb,
# which must neither reload nor restart the running nginx; nginx -t; nginx restarted with
# ory_session against the Kratos double and the echo backend on this machine; one valid and
# one missing session; apt-get remove and a reinstall, which disable and enable the module as
# Debian's own module packages do; apt-get purge, which must leave no file of the package.
# lintian checks the .deb: an E: line fails the test, the other tags are shown.
#
# Fails (never skips) when a tool is missing or a step cannot run, with the reason. The image
# is built without intermediate images; the container and the image are removed at the end,
# so nothing of the test stays in Podman's storage but the Debian base image.
use v5.36;
use Test::More;
use File::Temp qw(tempdir);
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest qw(give_up);

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $PKG = 'libnginx-mod-http-ory-session';
my $SO = '/usr/lib/nginx/modules/ngx_http_ory_session_module.so';
my $AVAILABLE = '/usr/share/nginx/modules-available/mod-http-ory-session.conf';
my $ENABLED = '/etc/nginx/modules-enabled/50-mod-http-ory-session.conf';
my $IMAGE = "$OryTest::TOP/scripts/image";

sub podman (@args) { OryTest::run($IMAGE, 'podman', @args) }

my $tag = "localhost/nginx-ory:t72-$$";
my $name = "nginx-ory-t72-$$";
END {
    local $?;
    podman('rm', '-f', '-t', '0', $name);
    podman('rmi', '-f', $tag);
}

my $started = time;
my $out_dir = tempdir('nginx-ory-t72-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# ---------------------------------------------------------------------------------------------
# The package as built

my ($code, $out) = OryTest::run("$OryTest::TOP/scripts/package-deb", '--output', $out_dir);
my ($deb) = $out =~ /([^\n]+)\n?\z/;
ok !$code && $deb && -f $deb, 'scripts/package-deb built a package'
    or give_up("scripts/package-deb --output $out_dir failed (exit $code):\n" . substr($out, -6000));
diag sprintf 'package built in %d s: %s', time - $started, $deb;

my ($crate_version) = OryTest::_slurp("$OryTest::TOP/Cargo.toml") =~ /^version\s*=\s*"([^"]+)"/m;
my ($changelog_version) = OryTest::_slurp("$OryTest::TOP/CHANGELOG.md") =~ /^## (\S+)/m;
my $arch = `dpkg --print-architecture` =~ s/\s+//gr;
my ($abi) = `dpkg-query -W -f='\${Provides}' nginx` =~ /(nginx-abi-[^\s,]+)/;
ok $abi, "the installed nginx provides $abi" or give_up('the installed nginx package provides no nginx-abi-...');

sub field ($f) { my $v = `dpkg-deb -f '$deb' $f`; chomp $v; $v }
my $version = field('Version');
is field('Package'), $PKG, 'Package:';
like $version, qr/^\Q$crate_version\E-\d+$/, "Version: $version, Cargo.toml's version and a Debian revision";
is $changelog_version, $version, 'the top entry of CHANGELOG.md gives the same version';
is $deb =~ s{.*/}{}r, "${PKG}_${version}_$arch.deb", 'the file name is PACKAGE_VERSION_ARCH.deb';
is field('Architecture'), $arch, "Architecture: $arch";
my @depends = split /,\s*/, field('Depends');
ok +(grep { $_ eq $abi } @depends), "Depends: $abi exactly" or diag "Depends: @depends";
ok +(grep { /^libc6 \(>= [\d.]+\)$/ } @depends), 'Depends: libc6 with its version (dpkg-shlibdeps)'
    or diag "Depends: @depends";

my $contents = `dpkg-deb -c '$deb'`;
diag "dpkg-deb -c:\n$contents";
my @paths = map { m{ \./(\S*)$} ? "/$1" : () } split /\n/, $contents;
my @files = grep { !m{/$} } @paths;
my @dirs = map { s{/$}{}r } grep { m{./$} } @paths;
is_deeply [sort @files],
    [sort $SO, $AVAILABLE, map { "/usr/share/doc/$PKG/$_" } qw(changelog.Debian.gz changelog.gz copyright)],
    'the files: the module, its load_module .conf, copyright and changelogs';
ok !grep({ m{^/etc/} } @paths), 'nothing in /etc: the link is made by postinst';
like $contents, qr{^-rw-r--r-- root/root .* \./usr/lib/nginx/modules/ngx_http_ory_session_module\.so$}m,
    'the module is root:root 0644';

my $x = tempdir('nginx-ory-t72-x-XXXXXX', TMPDIR => 1, CLEANUP => 1);
system('dpkg-deb', '-R', $deb, $x) == 0 or give_up("dpkg-deb -R $deb failed");
is OryTest::_slurp("$x$AVAILABLE"), "load_module modules/ngx_http_ory_session_module.so;\n",
    'modules-available holds the load_module line';
my $copyright = OryTest::_slurp("$x/usr/share/doc/$PKG/copyright");
like $copyright, qr{^Format: https://www\.debian\.org/doc/packaging-manuals/copyright-format/1\.0/$}m, 'copyright: DEP-5';
like $copyright, qr{^License: Apache-2\.0$}m, 'copyright: Apache-2.0';
like $copyright, qr{/usr/share/common-licenses/Apache-2\.0}, 'copyright: points at the common license';
for my $script (qw(postinst prerm postrm)) {
    # What the script runs, without the text of the message it prints.
    my $text = OryTest::_slurp("$x/DEBIAN/$script") =~ s/<<'?(\w+)'?\n.*?\n\1\n//gsr;
    ok -x "$x/DEBIAN/$script", "$script is there and executable";
    unlike $text, qr/invoke-rc\.d|systemctl +(?:re|start|stop)|\bservice\b|dpkg-trigger|nginx -s|start-stop-daemon/,
        "$script neither reloads nor restarts nginx";
}

# ---------------------------------------------------------------------------------------------
# lintian

($code, $out) = OryTest::run("$OryTest::TOP/scripts/deps", 'lintian');
is $code, 0, 'scripts/deps lintian' or diag $out;
my ($lintian) = grep { -x } map { "$_/lintian" } split /:/, $ENV{PATH};
$lintian or give_up("lintian is missing, and scripts/deps lintian did not install it:\n$out");
($code, $out) = OryTest::run($lintian, '--display-info', $deb);
my @tags = grep { /^[EWIPXO]: / } split /\n/, $out;
my @errors = grep { /^E: / } @tags;
ok !@errors, 'lintian reports no error' or diag join "\n", @errors;
diag @tags ? "lintian --display-info:\n" . join("\n", map { "    $_" } @tags) : 'lintian: nothing to report';

# ---------------------------------------------------------------------------------------------
# A Debian 12 container with Debian's nginx

($code, $out) = OryTest::run($IMAGE, 'base');
is $code, 0, 'the Debian base image is there (scripts/image base)' or give_up("scripts/image base failed:\n$out");

my $ctx = tempdir('nginx-ory-t72-ctx-XXXXXX', TMPDIR => 1, CLEANUP => 1);
# The base is debian:bookworm-slim's equivalent, which keeps no documentation: without its
# dpkg excludes the package installs every file it has, as on a full Debian system. The apt
# lists stay, for apt-get install ./….deb. The welcome site would take port 80 of this machine.
open my $cf, '>', "$ctx/Containerfile" or die "$ctx/Containerfile: $!";
print $cf <<'EOF';
FROM localhost/debian:bookworm-slim
RUN rm -f /etc/dpkg/dpkg.cfg.d/slim \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
    && rm -f /etc/nginx/sites-enabled/default \
    && nginx -v
EOF
close $cf;
$started = time;
($code, $out) = podman('build', '--layers=false', '--force-rm', '--network', 'host', '-t', $tag, $ctx);
is $code, 0, "an image with Debian's nginx builds"
    or give_up("podman build failed (exit $code):\n" . substr($out, -6000));
diag sprintf 'image %s built in %d s', $tag, time - $started;

($code, $out) = podman('run', '-d', '--name', $name, '--network', 'host', $tag, 'sleep', 'infinity');
is $code, 0, 'the container starts' or give_up("podman run failed (exit $code):\n$out");

sub in_container (@cmd) { podman('exec', $name, @cmd) }
sub sh ($script) { in_container('sh', '-c', $script) }
sub exists_in ($path) { (sh("test -e '$path' || test -L '$path'"))[0] == 0 }
sub apt (@args) { in_container('env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', '-y', @args) }

($code, $out) = in_container('dpkg-query', '-W', '-f=${Version}: ${Provides}', 'nginx');
diag "the container's nginx $out";
like $out, qr/\Q$abi\E/, "the container's nginx provides $abi too";

# nginx processes as "PID title" lines, sorted: the master and its workers.
sub nginx_processes () {
    my (undef, $o) = sh(q{for d in /proc/[0-9]*; do t=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null);}
        . q{ case "$t" in nginx:*) echo "${d#/proc/} $t";; esac; done});
    return join "\n", sort split /\n/, $o;
}
sub stop_nginx () {
    sh('nginx -s quit');
    my $t0 = time;
    sleep 1 while nginx_processes() ne '' && time - $t0 < 15;
    return nginx_processes() eq '';
}

($code, $out) = in_container('nginx');
is $code, 0, "Debian's nginx runs in the container before the package is installed" or diag $out;
my $before = nginx_processes();
like $before, qr/nginx: master process/, 'a master and its workers' or diag $before;

# ---------------------------------------------------------------------------------------------
# Install

my $in_deb = '/tmp/' . ($deb =~ s{.*/}{}r);
($code, $out) = podman('cp', $deb, "$name:$in_deb");
is $code, 0, 'the package is copied into the container' or give_up("podman cp failed:\n$out");

($code, $out) = apt('install', $in_deb);
is $code, 0, "apt-get install $in_deb" or give_up("apt-get install failed (exit $code):\n$out");
like $out, qr/nginx -t/, 'the package tells the admin to run nginx -t' or diag $out;
like $out, qr/restart nginx/, '... and to restart nginx';
is nginx_processes(), $before, 'the running nginx was neither reloaded nor restarted (same master, same workers)';

ok exists_in($SO), "$SO is installed";
($code, $out) = in_container('readlink', $ENABLED);
is $out =~ s/\s+$//r, $AVAILABLE, "$ENABLED links to $AVAILABLE";
($code, $out) = in_container('dpkg-query', '-L', $PKG);
my @installed = grep { m{^/} && $_ ne '/.' } split /\n/, $out;
ok +(grep { $_ eq "/usr/share/doc/$PKG/changelog.gz" } @installed), 'every file is installed, the docs too'
    or diag $out;

($code, $out) = in_container('nginx', '-t');
is $code, 0, 'nginx -t with the module enabled' or diag $out;

# ---------------------------------------------------------------------------------------------
# Restart with ory_session, then a valid and a missing session

my $t = OryTest->new;
$t->start_kratos;
$t->start_backend;
my $port = $t->port('http');
my $site = $t->write_file('conf/ory.conf', $t->expand(<<'EOF'));
ory_session_kratos_url %%KRATOS_URL%%;

server {
    listen 127.0.0.1:%%HTTP_PORT%%;

    location / {
        ory_session on;
        proxy_set_header X-User-Id $ory_user_id;
        proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
    }
}
EOF
($code, $out) = podman('cp', $site, "$name:/etc/nginx/conf.d/ory.conf");
is $code, 0, 'a site with ory_session in conf.d' or give_up("podman cp failed:\n$out");
($code, $out) = in_container('nginx', '-t');
is $code, 0, 'nginx -t accepts the ory_session directives' or diag $out;
like $out, qr/test is successful/, 'nginx -t: test is successful';

ok stop_nginx(), 'the old nginx stops';
($code, $out) = in_container('nginx');
is $code, 0, 'nginx starts again, with the module' or diag $out;
ok $t->wait_for(sub { !!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1) },
        timeout => 15), "nginx in the container listens on 127.0.0.1:$port"
    or give_up("the container's nginx does not listen:\n"
        . (in_container('tail', '-n', '30', '/var/log/nginx/error.log'))[1]);

my $r = $t->get('/app', Cookie => 'ory_kratos_session=jane-cookie');
is $r->{status}, 200, 'a valid session: 200';
is $r->{json}{headers}{'x-user-id'}, $JANE, 'the upstream gets the user id';
is $t->get('/app')->{status}, 401, 'no session: 401';
is $t->get('/app', Cookie => 'ory_kratos_session=nobody-cookie')->{status}, 401, 'an unknown session: 401';

ok stop_nginx(), 'nginx stops';
($code, $out) = in_container('cat', '/var/log/nginx/error.log');
my @bad = grep { /\[(alert|emerg|crit)\]|exited on signal/ } split /\n/, $out;
ok !@bad, "the container's error.log has no alert, emerg, crit or crash" or diag join "\n", @bad;
$t->stop;

# ---------------------------------------------------------------------------------------------
# Remove, reinstall, purge

in_container('rm', '/etc/nginx/conf.d/ory.conf');
($code, $out) = apt('remove', $PKG);
is $code, 0, "apt-get remove $PKG" or diag $out;
ok !exists_in($SO), 'remove: the module is gone';
ok !exists_in($ENABLED), 'remove: the modules-enabled link is gone';
ok exists_in("$ENABLED.removed"), '... renamed to .removed, as Debian does, for a reinstall';
($code, $out) = in_container('nginx', '-t');
is $code, 0, 'nginx -t without the module' or diag $out;

($code, $out) = apt('install', $in_deb);
is $code, 0, 'apt-get install again' or diag $out;
($code, $out) = in_container('readlink', $ENABLED);
is $out =~ s/\s+$//r, $AVAILABLE, 'the reinstall enables the module again';
ok !exists_in("$ENABLED.removed"), '... and drops the .removed link';

($code, $out) = apt('purge', $PKG);
is $code, 0, "apt-get purge $PKG" or diag $out;
my %seen;
my @left = grep { !$seen{$_}++ && exists_in($_) } @files, @dirs, @installed, $ENABLED, "$ENABLED.removed";
# Directories such as /usr/lib/nginx/modules stay: other packages own them.
@left = grep { (in_container('dpkg-query', '-S', $_))[0] != 0 } @left;
ok !@left, 'purge: no file or directory of the package is left' or diag "left: @left";
ok !exists_in("/usr/share/doc/$PKG"), "purge: /usr/share/doc/$PKG is gone";
($code, $out) = in_container('dpkg-query', '-W', '-f=${db:Status-Abbrev}', $PKG);
ok $code != 0 || $out !~ /^.i/, 'dpkg no longer has the package installed' or diag $out;
($code, $out) = in_container('nginx', '-t');
is $code, 0, 'nginx -t after the purge' or diag $out;

done_testing;
