package OryTest;

# The end-to-end test harness: our own small Test::Nginx. Each OryTest object owns a temporary
# nginx prefix, named free ports, and the helper daemons it started (t/lib/kratos-double,
# t/lib/echo-backend). Requests go over raw sockets so tests can send any bytes at all.
#
#   my $t = OryTest->new->serve(<<'EOF');    # the Kratos double, the echo backend, nginx
#   ory_session_kratos_url %%KRATOS_URL%%;
#   server { listen 127.0.0.1:%%HTTP_PORT%%; ... proxy_pass http://127.0.0.1:%%BACKEND_PORT%%; }
#   EOF
#   is $t->get('/', Cookie => 'ory_kratos_session=jane-cookie')->{status}, 200;
#   my ($r, $calls, $log) = $t->check('/', @headers);    # with the whoami calls and log lines
#   done_testing;
#
# The end of this file holds what several test files use: check, users (many sessions at
# once), wrong_identities, background (requests from a child process), give_up.
#
# Stopping an object that started nginx (explicitly, when it goes out of scope, at
# done_testing or at exit) adds one test: error.log has no [alert], [emerg], [crit] or
# "exited on signal" line, so a crashed worker fails the test file that caused it.

use v5.36;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Socket qw(SOL_SOCKET SO_LINGER);
use Test2::API qw(test2_stack);
use Test::More ();
use Time::HiRes qw(time sleep);
use Exporter qw(import);

our @EXPORT_OK = qw(wrong_identities give_up);
our $TOP = abs_path(dirname(__FILE__) . '/../..');
my $JSON = JSON::PP->new->utf8->canonical;
my $BAD_LOG_LINE = qr/\[alert\]|\[emerg\]|exited on signal|\[crit\]/;
my @LIVE;    # weak references to every object, stopped at done_testing and at exit

# done_testing prints the plan: the error.log assertions must come before it. Subtests have
# their own done_testing, which must not stop anything.
{
    no warnings 'redefine';
    my $done_testing = \&Test::Builder::done_testing;
    *Test::Builder::done_testing = sub {
        _stop_all() unless test2_stack()->top->isa('Test2::Hub::Subtest');
        goto &$done_testing;
    };
}

# Runs before Test::Builder's own END block (END blocks run in reverse order of definition).
END {
    local $?;
    _stop_all();
}

sub _stop_all { $_ && $_->stop for @LIVE }

# An interrupted test must still stop its nginx (a daemon, outside our process group): turn
# the signal into an exit so END runs.
$SIG{INT} ||= sub { exit 130 };
$SIG{TERM} ||= sub { exit 143 };

sub new ($class, %opts) {
    my $keep = $ENV{TEST_KEEP};
    my $prefix = tempdir('nginx-ory-t-XXXXXX', TMPDIR => 1, CLEANUP => !$keep);
    # Workers run as nobody when the tests run as root: they must be able to enter the prefix.
    chmod 0755, $prefix;
    mkdir "$prefix/$_" for qw(conf logs html);
    my $self = bless {
        %opts, prefix => $prefix, ports => {}, procs => {}, allowed => [], exempt => [],
        owner => $$,
    }, $class;
    $self->write_file('html/index.html', "index\n");
    push @LIVE, $self;
    weaken $LIVE[-1];
    Test::More::diag("OryTest: prefix $prefix is kept (TEST_KEEP)") if $keep;
    return $self;
}

sub prefix ($self) { $self->{prefix} }

sub nginx_binary ($self) {
    return $self->{nginx_binary} //= do {
        my $bin = $ENV{TEST_NGINX_BINARY}
            || (sort { -M $a <=> -M $b } glob "$TOP/target/release/build/nginx-sys-*/out/objs/nginx")[0];
        die "OryTest: no nginx binary (looked for $TOP/target/release/build/nginx-sys-*/out/objs/nginx):"
            . " build the module in release mode first or set TEST_NGINX_BINARY\n" unless $bin && -x $bin;
        abs_path($bin);
    };
}

sub module_path ($self) {
    return $self->{module_path} //= do {
        my $so = $ENV{TEST_ORY_MODULE} || "$TOP/target/release/libngx_http_ory_session_module.so";
        die "OryTest: no module at $so: build it in release mode first or set TEST_ORY_MODULE\n"
            unless -f $so;
        abs_path($so);
    };
}

# A free port per name, picked once: binding to port 0 lets the kernel choose.
sub port ($self, $name = 'http') {
    return $self->{ports}{$name} if $self->{ports}{$name};
    my %taken = map { $_ => 1 } values %{ $self->{ports} };
    my $port;
    for (1 .. 20) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
            or die "OryTest: cannot find a free port: $@\n";
        $port = $s->sockport;
        close $s;
        last unless $taken{$port};
    }
    return $self->{ports}{$name} = $port;
}

sub url ($self, $path = '/') { 'http://127.0.0.1:' . $self->port('http') . $path }

sub write_file ($self, $name, $content) {
    my $file = "$self->{prefix}/$name";
    open my $fh, '>:raw', $file or die "OryTest: cannot write $file: $!\n";
    print $fh $content;
    close $fh or die "OryTest: cannot write $file: $!\n";
    return $file;
}

sub _slurp ($file) {
    open my $fh, '<:raw', $file or return '';
    local $/;
    return scalar <$fh>;
}

# ---------------------------------------------------------------------------------------------
# Helper daemons

sub start_kratos ($self, %o) {
    my $name = $o{name} // 'kratos';
    my $sessions = $o{sessions} // "$TOP/t/lib/sessions.json";
    if (ref $sessions) {
        $sessions = $self->write_file("conf/$name-sessions.json", $JSON->encode($sessions));
    } elsif (!-e $sessions && -e "$TOP/$sessions") {
        $sessions = "$TOP/$sessions";
    }
    my $port = $self->port($name);
    $self->_daemon($name, "$TOP/t/lib/kratos-double", '--listen', "127.0.0.1:$port",
        '--sessions', $sessions, '--pid-file', "$self->{prefix}/logs/$name.pid");
    return $self->kratos_url($name);
}

sub start_backend ($self, %o) {
    my $name = $o{name} // 'backend';
    my $port = $self->port($name);
    $self->_daemon($name, "$TOP/t/lib/echo-backend", '--listen', "127.0.0.1:$port",
        '--pid-file', "$self->{prefix}/logs/$name.pid");
    return $port;
}

# The Keto double (t/lib/keto-double) with tuples in Keto's notation
# ("namespace:object#relation@subject"); returns its URL.
sub start_keto ($self, %o) {
    my $name = $o{name} // 'keto';
    my $file = $self->write_file("conf/$name-tuples.json", $JSON->encode({ tuples => $o{tuples} // [] }));
    my $port = $self->port($name);
    $self->_daemon($name, "$TOP/t/lib/keto-double", '--listen', "127.0.0.1:$port",
        '--tuples', $file, '--pid-file', "$self->{prefix}/logs/$name.pid");
    return $self->keto_url($name);
}

sub keto_url ($self, $name = 'keto') { 'http://127.0.0.1:' . $self->port($name) }

# The Hydra double (t/lib/hydra-double): a JWKS and an introspection endpoint; mints tokens
# with PyJWT. Its keys are made once per test file and kept in the prefix, so a restart
# serves the same set. Returns its base URL (which is also the issuer of its tokens).
sub start_hydra ($self, %o) {
    my $name = $o{name} // 'hydra';
    my $port = $self->port($name);
    $self->_daemon($name, "$TOP/t/lib/hydra-double", '--listen', "127.0.0.1:$port",
        '--keys', "$self->{prefix}/conf/$name-keys.json", '--pid-file', "$self->{prefix}/logs/$name.pid");
    # The double listens first and then makes its RSA-4096 key, which on a loaded machine
    # takes longer than ory_oauth2_timeout: a worker's first JWKS fetch would time out and
    # the test would measure the machine. It says "listening" once it answers.
    my $log = "$self->{prefix}/logs/$name.log";
    my $deadline = time + 60;
    until (_slurp($log) =~ /^hydra-double listening on /m) {
        die "OryTest: $name made no keys within 60 s:\n" . _slurp($log) if time > $deadline;
        sleep 0.05;
    }
    return $self->hydra_url($name);
}

sub hydra_url ($self, $name = 'hydra') { 'http://127.0.0.1:' . $self->port($name) }
sub hydra_calls ($self, $name = 'hydra') { $self->_stub(GET => '/__double/calls', undef, $name) }
sub hydra_reset ($self, $name = 'hydra') { $self->_stub(POST => '/__double/reset', {}, $name) }
sub hydra_behaviour ($self, $b, $name = 'hydra') { $self->_stub(POST => '/__double/behaviour', $b, $name) }
sub hydra_rotate ($self, $b = {}, $name = 'hydra') { $self->_stub(POST => '/__double/rotate', $b, $name) }
# A JWT signed by the double: jwt(alg => 'RS256', claims => {...}, header => {...}, kid => ...).
sub jwt ($self, %o) { $self->_stub(POST => '/__double/jwt', \%o, $o{name} // 'hydra')->{token} }
# An attack token: forged(kind => 'none' | 'hs256-public-key', claims => {...}).
sub forged_token ($self, %o) { $self->_stub(POST => '/__double/forged', \%o, $o{name} // 'hydra')->{token} }
# An opaque token the double's introspection knows: opaque(claims => {...}, active => 1).
sub opaque_token ($self, %o) { $self->_stub(POST => '/__double/opaque', \%o, $o{name} // 'hydra')->{token} }
sub keto_calls ($self, $name = 'keto') { $self->_stub(GET => '/__double/calls', undef, $name) }
sub keto_reset ($self, $name = 'keto') { $self->_stub(POST => '/__double/reset', {}, $name) }
sub keto_behaviour ($self, $b, $name = 'keto') { $self->_stub(POST => '/__double/behaviour', $b, $name) }
sub keto_tuples ($self, $doc, $name = 'keto') { $self->_stub(POST => '/__double/tuples', $doc, $name) }

sub stop_kratos ($self, $name = 'kratos') { $self->_stop_proc($name) }
sub stop_backend ($self, $name = 'backend') { $self->_stop_proc($name) }

sub _daemon ($self, $name, $script, @args) {
    $self->_stop_proc($name);
    my $log = "$self->{prefix}/logs/$name.log";
    my $pid = fork // die "OryTest: fork: $!\n";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        # Perl doubles run with this perl; others (the Python Hydra double) by their #! line.
        my @run = _slurp($script) =~ /\A#![^\n]*perl/ ? ($^X, $script) : ($script);
        exec(@run, @args, '--parent-pid', getppid) or POSIX::_exit(127);
    }
    $self->{procs}{$name} = $pid;
    my $port = $self->port($name);
    my $deadline = time + 10;
    while (time < $deadline) {
        return $pid if IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1);
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{procs}{$name};
            die "OryTest: $name exited (status $?) before listening on $port:\n" . _slurp($log);
        }
        sleep 0.02;
    }
    die "OryTest: $name did not listen on 127.0.0.1:$port within 10 s:\n" . _slurp($log);
}

sub _stop_proc ($self, $name) {
    my $pid = delete $self->{procs}{$name} or return;
    kill 'TERM', $pid;
    my $deadline = time + 5;
    while (waitpid($pid, WNOHANG) == 0) {
        if (time > $deadline) { kill 'KILL', $pid; waitpid $pid, 0; last }
        sleep 0.01;
    }
}

sub kratos_url ($self, $name = 'kratos') { 'http://127.0.0.1:' . $self->port($name) }

sub _stub ($self, $method, $path, $body = undef, $name = 'kratos') {
    my $res = HTTP::Tiny->new(timeout => 10, keep_alive => 0)->request($method, $self->kratos_url($name) . $path,
        defined $body ? { content => $JSON->encode($body), headers => { 'content-type' => 'application/json' } } : {});
    die "OryTest: $method $path on $name failed: $res->{status} $res->{reason}\n$res->{content}\n"
        unless $res->{success};
    return $JSON->decode($res->{content});
}

sub kratos_calls ($self, $name = 'kratos') { $self->_stub(GET => '/__stub/calls', undef, $name) }
sub kratos_reset ($self, $name = 'kratos') { $self->_stub(POST => '/__stub/reset', {}, $name) }
sub kratos_behaviour ($self, $b, $name = 'kratos') { $self->_stub(POST => '/__stub/behaviour', $b, $name) }
sub kratos_add_sessions ($self, $doc, $name = 'kratos') { $self->_stub(POST => '/__stub/sessions', $doc, $name) }
# Ends sessions in the double only, as Kratos' admin API would: {session_id => S} or {identity_id => I}.
sub kratos_revoke ($self, $what, $name = 'kratos') { $self->_stub(POST => '/__stub/revoke', $what, $name) }

# ---------------------------------------------------------------------------------------------
# nginx

# Replaces %%HTTP_PORT%%, %%KRATOS_URL%%, %%KRATOS_PORT%%, %%BACKEND_PORT%%, %%PORT_name%%
# and %%PREFIX%%.
sub expand ($self, $text) {
    $text =~ s/%%HTTP_PORT%%/$self->port('http')/ge;
    $text =~ s/%%KRATOS_URL%%/$self->kratos_url/ge;
    $text =~ s/%%KETO_URL%%/$self->keto_url/ge;
    $text =~ s/%%HYDRA_URL%%/$self->hydra_url/ge;
    $text =~ s/%%KRATOS_PORT%%/$self->port('kratos')/ge;
    $text =~ s/%%BACKEND_PORT%%/$self->port('backend')/ge;
    $text =~ s/%%PORT_(\w+)%%/$self->port($1)/ge;
    $text =~ s/%%PREFIX%%/$self->{prefix}/g;
    return $text;
}

# %o: error_log_level (info), worker_processes (1), main (extra main-context directives),
# events (extra events directives), module => 0 (no load_module: plain nginx).
sub write_config ($self, $http, %o) {
    $self->{workers} = $o{worker_processes} // 1;
    my $load = exists $o{module} && !$o{module} ? '' : 'load_module ' . $self->module_path . ";\n";
    my $conf = $load . <<"EOF";
error_log logs/error.log @{[ $o{error_log_level} // 'info' ]};
worker_processes $self->{workers};
daemon on;
pid logs/nginx.pid;
@{[ $o{main} // '' ]}
events {
    worker_connections 4096;
@{[ $o{events} // '' ]}
}

http {
    access_log logs/access.log;

$http
}
EOF
    return $self->write_file('conf/nginx.conf', $self->expand($conf));
}

sub _nginx ($self, @args) {
    my @valgrind = grep({ $_ eq '-t' || $_ eq '-s' } @args) ? () : $self->_valgrind;
    return _run(@valgrind, $self->nginx_binary, '-p', "$self->{prefix}/", '-c', 'conf/nginx.conf', @args);
}

# TEST_NGINX_VALGRIND: run nginx (not `nginx -t` or `-s`) under valgrind, every process of it.
# 1 for memcheck with logs in logs/valgrind.PID.log, or the whole command prefix to use
# (scripts/memcheck sets one).
sub _valgrind ($self) {
    my $v = $ENV{TEST_NGINX_VALGRIND} or return ();
    return split ' ', $v unless $v eq '1';
    return ('valgrind', '--tool=memcheck', '--leak-check=full', '--errors-for-leak-kinds=definite',
        "--log-file=$self->{prefix}/logs/valgrind.%p.log");
}

# Runs a command to completion; returns (exit code, stdout and stderr together). Output goes
# through a file, not a pipe: a daemonizing nginx must not keep us waiting for EOF.
sub _run (@cmd) {
    my $out = File::Temp->new;
    my $pid = fork // die "OryTest: fork: $!\n";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out->filename;
        open STDERR, '>&', \*STDOUT;
        exec(@cmd) or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $code = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    return ($code, _slurp($out->filename));
}

sub _log_file ($self) { "$self->{prefix}/logs/error.log" }

# `nginx -t`: returns (exit code, output). What it logs is exempt from the error.log check.
sub nginx_test ($self) {
    my $before = -s $self->_log_file // 0;
    my @r = $self->_nginx('-t');
    my $after = -s $self->_log_file // 0;
    push @{ $self->{exempt} }, [$before, $after] if $after > $before;
    return @r;
}

sub start_nginx ($self) {
    die "OryTest: write_config before start_nginx\n" unless -e "$self->{prefix}/conf/nginx.conf";
    unlink "$self->{prefix}/logs/nginx.pid";
    my ($code, $out) = $self->_nginx;
    die "OryTest: nginx failed to start (exit $code):\n$out" if $code;
    $self->{nginx_started} = 1;
    $self->{checked} = 0;
    $self->wait_for(sub { ($self->{master}) = _slurp("$self->{prefix}/logs/nginx.pid") =~ /(\d+)/ }, timeout => 10)
        or die "OryTest: nginx wrote no pid file\n" . $self->error_log;
    my $n = $self->_expected_workers;
    $self->wait_for(sub { $self->worker_pids >= $n }, timeout => 10)
        or die "OryTest: nginx started no worker process\n" . $self->error_log;
    if (exists $self->{ports}{http}) {
        $self->wait_for(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->port, Timeout => 1) },
            timeout => 10) or die "OryTest: nginx does not accept on port " . $self->port . "\n" . $self->error_log;
    }
    return $self->{master};
}

sub _expected_workers ($self) {
    my $n = $self->{workers} // 1;
    return $n if $n =~ /^\d+$/;
    my $cpus = `nproc 2>/dev/null` // '';
    return $cpus =~ /^(\d+)/ ? $1 : 1;
}

sub nginx_pid ($self) { $self->{master} }

# Worker processes of the running master, current generation only (read from /proc).
sub worker_pids ($self) {
    my $master = $self->{master};
    my @pids;
    for my $dir ($master ? glob '/proc/[0-9]*' : ()) {
        my ($ppid) = _slurp("$dir/stat") =~ /\) \S+ (\d+)/ or next;
        next unless $ppid == $master;
        my $cmdline = _slurp("$dir/cmdline");
        my $pid = $dir =~ s{^/proc/}{}r;
        # Under valgrind the process title cannot be read: every child of the master is a worker.
        my $worker = $ENV{TEST_NGINX_VALGRIND} || $cmdline =~ /worker process/ && $cmdline !~ /shutting down/;
        push @pids, $pid if $worker && !$self->{old}{$pid};
    }
    return @pids;
}

# `nginx -s reload`, then wait until a new generation of workers runs. Dies if it does not.
# With `old_gone => 1`, also until the old workers have exited, so that only new ones answer
# and whatever the old ones do at exit is done.
sub reload ($self, %o) {
    die "OryTest: nginx is not running\n" unless $self->{master};
    my @old = $self->worker_pids;
    my ($code, $out) = $self->_nginx('-s', 'reload');
    die "OryTest: nginx -s reload failed (exit $code):\n$out" if $code;
    # From now on the old workers are shutting down, even before their title says so.
    $self->{old}{$_} = 1 for @old;
    my $n = $self->_expected_workers;
    $self->wait_for(sub { $self->worker_pids >= $n }, timeout => $o{timeout} // 10)
        or die "OryTest: no new worker processes after reload\n" . $self->error_log;
    if ($o{old_gone}) {
        $self->wait_for(sub { !grep { _alive($_) } @old }, timeout => $o{timeout} // 10)
            or die "OryTest: the old workers did not exit after reload\n" . $self->error_log;
    }
    return 1;
}

# Graceful stop (SIGQUIT, what `nginx -s quit` sends, without needing a valid config); after
# 15 s, TERM then KILL, workers included.
sub stop_nginx ($self) {
    my $master = delete $self->{master} or return;
    my @workers = do { local $self->{master} = $master; local $self->{old} = {}; $self->worker_pids };
    kill 'QUIT', $master;
    my $deadline = time + 15;
    sleep 0.02 while _alive($master) && time < $deadline;
    if (_alive($master)) {
        Test::More::diag("OryTest: nginx did not quit within 15 s, killing it");
        kill 'TERM', $master;
        sleep 1;
        kill 'KILL', $master, @workers;
    }
}

# The daemonized master is not our child: once it exited it may stay a zombie until init
# reaps it, which `kill 0` cannot tell from a live process.
sub _alive ($pid) { kill(0, $pid) && _slurp("/proc/$pid/stat") !~ /^\d+ \(.*\) Z/s }

sub stop ($self) {
    return unless $self->{owner} == $$;
    local $?;
    $self->stop_nginx;
    $self->_stop_proc($_) for sort keys %{ $self->{procs} };
    if ($self->{nginx_started} && !$self->{checked}++) {
        my @bad = grep { my $l = $_; !grep { $l =~ $_ } @{ $self->{allowed} } } $self->log_lines($BAD_LOG_LINE);
        local $Test::Builder::Level = $Test::Builder::Level + 1;
        Test::More::ok(!@bad, 'error.log has no alert, emerg, crit or crash')
            or Test::More::diag(join '', "in $self->{prefix}/logs/error.log:\n", map { "    $_\n" } @bad);
    }
}

sub DESTROY ($self) {
    return unless ($self->{owner} // 0) == $$;
    local ($?, $@);
    if (${^GLOBAL_PHASE} eq 'DESTRUCT') {
        # Too late for tests: just leave no process behind.
        kill 'QUIT', $self->{master} if $self->{master};
        kill 'TERM', values %{ $self->{procs} };
        return;
    }
    $self->stop;
}

sub allow_log ($self, $re) { push @{ $self->{allowed} }, $re }

sub error_log ($self) { _slurp($self->_log_file) }

# error.log lines (without newline) matching $re, except those written by nginx_test.
sub log_lines ($self, $re) {
    open my $fh, '<:raw', $self->_log_file or return;
    my @lines;
    while (1) {
        my $at = tell $fh;
        my $line = <$fh> // last;
        next if grep { $at >= $_->[0] && $at < $_->[1] } @{ $self->{exempt} };
        chomp $line;
        push @lines, $line if $line =~ $re;
    }
    return @lines;
}

sub access_log ($self) { _slurp("$self->{prefix}/logs/access.log") }

# Polls $cb every 50 ms until it returns true; returns its value, or false after the timeout.
sub wait_for ($self, $cb, %o) {
    my $deadline = time + ($o{timeout} // 5);
    while (1) {
        my $v = $cb->();
        return $v if $v;
        return $v if time >= $deadline;
        sleep $o{interval} // 0.05;
    }
}

# ---------------------------------------------------------------------------------------------
# Client side

# Header pairs in the order given; a value may be an arrayref (one line per element). Host and
# Connection: close are added unless given.
sub _request_bytes ($method, $path, @headers) {
    my %given = map { lc($headers[$_]) => 1 } grep { !($_ % 2) } 0 .. $#headers;
    my $out = "$method $path HTTP/1.1\r\n";
    $out .= "Host: localhost\r\n" unless $given{host};
    while (my ($name, $value) = splice @headers, 0, 2) {
        $out .= "$name: $_\r\n" for ref $value eq 'ARRAY' ? @$value : $value;
    }
    $out .= "Connection: close\r\n" unless $given{connection};
    utf8::encode($out) if utf8::is_utf8($out);
    return "$out\r\n";
}

sub get ($self, $path, @headers) {
    return $self->raw_request(_request_bytes('GET', $path, @headers));
}

# request(method => 'POST', path => '/', headers => [name => value, ...], body => '...',
# port => N, timeout => s): like get with any method and a body.
sub request ($self, %o) {
    my @headers = @{ $o{headers} // [] };
    push @headers, 'Content-Length' => length $o{body}
        if defined $o{body} && !grep { !($_ % 2) && lc $headers[$_] eq 'content-length' } 0 .. $#headers;
    my $bytes = _request_bytes($o{method} // 'GET', $o{path} // '/', @headers) . ($o{body} // '');
    return $self->raw_request($bytes, port => $o{port}, timeout => $o{timeout});
}

# Sends $bytes as they are on a fresh connection and reads one response (%o: port, timeout).
sub raw_request ($self, $bytes, %o) {
    my $c = { out => $bytes };
    $self->_exchange([$c], $o{timeout} // 10, $o{port});
    return $c->{res};
}

# All requests at once, one connection each; responses come back in the order of @$requests.
# Each request is [$path, header pairs...] (or just a path).
sub parallel_get ($self, $requests, %o) {
    my @conns = map { my ($path, @headers) = ref $_ ? @$_ : ($_); { out => _request_bytes('GET', $path, @headers) } }
        @$requests;
    $self->_exchange(\@conns, $o{timeout} // 30, $o{port});
    return [map { $_->{res} } @conns];
}

# Like parallel_get, but each request is sent at its own time, `at` seconds after the start:
# $requests = [{ at => 0.3, path => '/', headers => [pairs] }, ...]. Every response has `took`,
# the seconds from connecting to its last byte (%o: port, timeout, default 20 s).
sub timed_get ($self, $requests, %o) {
    my @conns = map { { at => $_->{at} // 0, out => _request_bytes('GET', $_->{path} // '/', @{ $_->{headers} // [] }) } }
        @$requests;
    $self->_exchange(\@conns, $o{timeout} // 20, $o{port});
    return [map { $_->{res} } @conns];
}

# Sends a request and closes the connection: at once, or after `after_ms`; with `rst => 1`
# the close is a reset instead of a FIN. Both options go among the header pairs.
sub abort_get ($self, $path, @args) {
    my (@headers, %o);
    while (my ($k, $v) = splice @args, 0, 2) {
        if ($k eq 'after_ms' || $k eq 'rst') { $o{$k} = $v } else { push @headers, $k, $v }
    }
    local $SIG{PIPE} = 'IGNORE';
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->port, Timeout => 5)
        or die "OryTest: cannot connect to nginx: $@\n";
    print $s _request_bytes('GET', $path, @headers);
    $s->flush;
    sleep $o{after_ms} / 1000 if $o{after_ms};
    setsockopt $s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0) if $o{rst};
    close $s;
    return 1;
}

# Sends each connection's request `out` on a connection of its own, opened `at` seconds after
# the start (at once without `at`), and reads every response (`res`, with `took`) with one
# select loop.
sub _exchange ($self, $conns, $timeout, $port = undef) {
    local $SIG{PIPE} = 'IGNORE';    # the server may close before it read everything
    my $start = time;
    my $deadline = $start + $timeout;
    my (%by_fh, $r, $w);
    $r = IO::Select->new;
    $w = IO::Select->new;
    my @due = sort { $a->{at} <=> $b->{at} } map { $_->{at} //= 0; $_ } @$conns;
    while (@due || $r->count) {
        while (@due && $start + $due[0]{at} <= time) {
            my $c = shift @due;
            @$c{qw(in sent)} = ('', time);
            $c->{head} //= $c->{out} =~ /^HEAD / ? 1 : 0;
            $c->{fh} = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port // $self->port, Timeout => 5);
            if (!$c->{fh}) {
                $c->{res} = { status => 0, error => "connect: $@", headers => {}, body => '', took => 0 };
                next;
            }
            $c->{fh}->blocking(0);
            $by_fh{ $c->{fh} } = $c;
            $w->add($c->{fh});
            $r->add($c->{fh});
        }
        my $left = $deadline - time;
        last if $left <= 0;
        $left = $start + $due[0]{at} - time if @due && $start + $due[0]{at} - time < $left;
        if (!$r->count) {
            sleep $left if $left > 0;
            next;
        }
        my ($readable, $writable) = IO::Select->select($r, $w->count ? $w : undef, undef, $left > 0 ? $left : 0);
        for my $fh (@{ $writable // [] }) {
            my $c = $by_fh{$fh};
            my $n = syswrite $fh, $c->{out};
            if (defined $n) { substr $c->{out}, 0, $n, '' } elsif (!$!{EAGAIN}) { $c->{out} = '' }
            $w->remove($fh) unless length $c->{out};
        }
        for my $fh (@{ $readable // [] }) {
            my $c = $by_fh{$fh};
            my $n = sysread $fh, my $buf, 65536;
            next if !defined $n && $!{EAGAIN};
            $c->{error} = "read: $!" unless defined $n;
            $c->{in} .= $buf if $n;
            my $eof = !$n;
            $c->{res} = _parse_response($c->{in}, $eof, $c->{head}, $c->{error});
            if ($c->{res} || $eof) {
                $c->{res} //= { status => 0, error => 'connection closed', raw => $c->{in}, headers => {}, body => '' };
                $c->{res}{took} = time - $c->{sent};
                $r->remove($fh);
                $w->remove($fh);
                close $fh;
            }
        }
    }
    for my $c (grep { !$_->{res} } @$conns) {
        $c->{res} = _parse_response($c->{in} // '', 0, $c->{head}, 'timeout')
            // { status => 0, error => 'timeout', raw => $c->{in} // '', headers => {}, body => '' };
        $c->{res}{took} = time - ($c->{sent} // $start);
        close $c->{fh} if $c->{fh};
    }
}

# A complete response from $buf, or undef while more bytes are needed. At EOF (or with an
# $error) whatever arrived is returned, marked with `error` if it is incomplete.
sub _parse_response ($buf, $eof, $head_request, $error = undef) {
    my $raw = $buf;
    my $final = $eof || defined $error;
    while (1) {
        my $end = index $buf, "\r\n\r\n";
        if ($end < 0) {
            return undef unless $final;
            $error //= length $raw ? 'incomplete headers' : 'connection closed';
            return { status => 0, error => $error, raw => $raw, headers => {}, body => '' };
        }
        my ($line, @lines) = split /\r\n/, substr($buf, 0, $end);
        my ($status) = $line =~ m{^HTTP/\d\.\d (\d{3})};
        $status //= 0;
        my $rest = substr $buf, $end + 4;
        if ($status >= 100 && $status < 200 && $status != 101) {    # 100 Continue and friends
            $buf = $rest;
            next;
        }
        my (%h, @list);
        for (@lines) {
            my ($name, $value) = /^([^:]+):\s*(.*?)\s*$/ or next;
            push @list, [$name, $value];
            $h{ lc $name } = exists $h{ lc $name } ? "$h{lc $name}, $value" : $value;
        }
        my $res = { status => $status + 0, headers => \%h, header_list => \@list, raw => $raw };
        my $incomplete;
        if ($head_request || $status == 204 || $status == 304) {
            $res->{body} = '';
        } elsif (($h{'transfer-encoding'} // '') =~ /chunked/i) {
            my ($body, $pos) = ('', 0);
            while (1) {
                my $eol = index $rest, "\r\n", $pos;
                if ($eol < 0) { $incomplete = 1; last }
                my $size = hex substr($rest, $pos, $eol - $pos);
                if ($size == 0) { last }
                if (length($rest) < $eol + 2 + $size + 2) { $incomplete = 1; last }
                $body .= substr $rest, $eol + 2, $size;
                $pos = $eol + 2 + $size + 2;
            }
            $res->{body} = $body;
        } elsif (defined $h{'content-length'}) {
            $incomplete = length $rest < $h{'content-length'};
            $res->{body} = substr $rest, 0, $h{'content-length'};
        } else {
            $incomplete = !$final;
            $res->{body} = $rest;
        }
        if ($incomplete) {
            return undef unless $final;
            $res->{error} = $error // 'incomplete body';
        }
        if (($h{'content-type'} // '') =~ /json/ || $res->{body} =~ /^\s*[\[{]/) {
            $res->{json} = eval { $JSON->decode($res->{body}) };
        }
        return $res;
    }
}

# ---------------------------------------------------------------------------------------------
# What the test files share

# The usual start: the Kratos double, the echo backend, then nginx with the http block $http
# (write_config's options in %o). Returns $self.
sub serve ($self, $http, %o) {
    $self->start_kratos;
    $self->start_backend;
    $self->write_config($http, %o);
    $self->start_nginx;
    return $self;
}

# One request with a fresh whoami counter: (response, whoami calls, the new error.log lines
# of the module). check_while: with the Kratos double behaving as $behaviour meanwhile (see
# kratos_behaviour).
sub check ($self, $path, @headers) { $self->check_while(undef, $path, @headers) }

sub check_while ($self, $behaviour, $path, @headers) {
    $self->kratos_reset;
    $self->kratos_behaviour($behaviour) if $behaviour;
    my $before = () = $self->log_lines(qr/ory_session: /);
    my $r = $self->get($path, @headers);
    my @lines = $self->log_lines(qr/ory_session: /);
    return ($r, $self->kratos_calls->{count}, [@lines[$before .. $#lines]]);
}

# $n new users of the Kratos double, each with a session of its own whose whoami answer takes
# $delay_ms: so that their requests can all be parked at once. Each user is
# { cookie => value, id => identity id }, and ->cookie gives its Cookie header pair.
sub users ($self, $n, $delay_ms) {
    my $g = ++$self->{user_generation};
    my @users = map { bless { cookie => "u$g-$_", id => "u$g-id-$_" }, 'OryTest::User' } 1 .. $n;
    for (my $i = 0; $i < @users; $i += 500) {    # 500 at a time: requests to the double stay small
        my $last = $i + 499 < $#users ? $i + 499 : $#users;
        $self->kratos_add_sessions({ sessions => [ map { {
            name => $_->{cookie}, credentials => [$_->{cookie}], delay_ms => $delay_ms,
            session => { identity => { id => $_->{id} } },
        } } @users[$i .. $last] ] });
    }
    return @users;
}

package OryTest::User {
    sub cookie ($u) { (Cookie => "ory_kratos_session=$u->{cookie}") }
}

# How many of @$responses are not 200 with the identity of their user in @users (the echo
# backend shows the X-User-Id header the test's nginx sets from $ory_user_id).
sub wrong_identities ($responses, @users) {
    return scalar grep {
        my $r = $responses->[$_];
        !($r && $r->{status} == 200 && ($r->{json}{headers}{'x-user-id'} // '') eq $users[$_]{id})
    } 0 .. $#users;
}

# Runs $code in a child process, for requests that must overlap with the parent's; returns a
# sub that waits for the child and returns what $code returned (anything JSON can hold; undef
# when it died). No test and no END block runs in the child.
sub background ($self, $code) {
    my $file = File::Temp->new(DIR => $self->{prefix}, TEMPLATE => 'background-XXXXXX');
    my $pid = fork // die "OryTest: fork: $!\n";
    if (!$pid) {
        my $result = eval { $code->() };
        if (open my $fh, '>', $file->filename) { print $fh $JSON->encode([$result]); close $fh }
        POSIX::_exit(0);
    }
    return sub {
        waitpid $pid, 0;
        my $out = eval { $JSON->decode(_slurp($file->filename)) };
        return $out ? $out->[0] : undef;
    };
}

# A session of t/lib/sessions.json, by name.
sub fixture_session ($class, $name) {
    my ($s) = grep { $_->{name} eq $name } @{ $JSON->decode(_slurp("$TOP/t/lib/sessions.json"))->{sessions} };
    return $s // die "OryTest: no session $name in t/lib/sessions.json\n";
}

# Ends the test file as failed, saying why: for a step without which nothing else can be
# tested (a tool that is missing, a build that failed). The other test files still run.
sub give_up ($why) {
    Test::More::diag($why);
    Test::More::done_testing();
    exit 1;
}

# The configuration of the zone tests (t/58, t/59): `/` keeps its sessions in the zone
# `sessions` of SIZE, `/local/` in the worker's own cache, and `/status` shows the zone;
# front => N sets the front cache's size (ory_session_cache_size).
sub zone_config ($zone, %o) {
    my $front = defined $o{front} ? "ory_session_cache_size $o{front};" : '';
    return <<"EOF";
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_cache_zone sessions:$zone;
    $front

    server {
        listen 127.0.0.1:%%HTTP_PORT%% reuseport;
        add_header X-Worker \$pid always;
        add_header X-Cache-Status \$ory_session_cache_status always;

        location / {
            ory_cache sessions;
            ory_session on;
            proxy_set_header X-User-Id \$ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /local/ {
            ory_session on;
            proxy_set_header X-User-Id \$ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location = /status {
            ory_session_status;
        }
    }
EOF
}

# A series of the zone `sessions` on the status page, e.g. zone_series('entries').
sub zone_series ($self, $name) {
    my ($v) = $self->get('/status')->{body} =~ /^ory_cache_zone_\Q$name\E\{zone="sessions"\} (\d+)$/m;
    return $v;
}

# Runs a command to completion: (exit code, stdout and stderr together).
sub run (@cmd) { _run(@cmd) }

1;
