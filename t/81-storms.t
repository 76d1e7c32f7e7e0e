# Lifecycle storms: hundreds of clients hanging up while their check is in flight, reloads
# under load with requests parked across each, and HTTP/2 clients resetting streams and
# dropping connections while parked. Through all of it no worker crashes, no slot of
# ory_session_max_pending leaks, and every answered request carries its own identity.
use v5.36;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Socket qw(SOL_SOCKET SO_LINGER IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time sleep);
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest qw(wrong_identities);

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';

my $t = OryTest->new;
# With ORY_TEST_ZONE set (t/84-storms-zone.t), every location stores its sessions in a shared
# zone: the same storms, with the zone's front cache, its lock and its calls.
my $zone = $ENV{ORY_TEST_ZONE} ? "ory_cache_zone storms:4m;\n    ory_cache storms;\n" : '';
note $zone ? 'with the shared zone' : 'with the per-worker cache';
# One worker, so that a leaked slot or a stuck call shows in the next requests; 400 slots,
# fewer than the calls the storms start in all, so leaked ones would be refused with 503.
$t->serve($zone . <<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_session_timeout 10s;
    ory_session_max_pending 400;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        listen 127.0.0.1:%%PORT_h2%%;
        http2 on;

        location / {
            ory_session on;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        # Every request asks Kratos, so every request is parked.
        location /nocache/ {
            ory_session on;
            ory_session_cache_ttl 0;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF

# Fresh users, some through the cache and some not: everything is served as it should be.
sub still_serving ($what, $n = 20) {
    my @fresh = $t->users($n, 50);
    my $res = $t->parallel_get([map { [$_ % 2 ? '/nocache/x' : '/x', $fresh[$_]->cookie] } 0 .. $#fresh]);
    is wrong_identities($res, @fresh), 0, "$what: $n new users get 200 with their own identity";
}

# Processes whose parent is the master: the workers, including old ones still shutting down.
sub master_children () {
    my $master = $t->nginx_pid;
    return grep { (OryTest::_slurp("/proc/$_/stat") =~ /\) \S+ (\d+)/)[0] == $master }
        map { m{/proc/(\d+)$} ? $1 : () } glob '/proc/[0-9]*';
}

# ---------------------------------------------------------------------------------------------

subtest '300 clients hang up while their check is in flight' => sub {
    my @users = $t->users(300, 700);
    # 200 hang up right after sending: 100 with a FIN, 100 with a reset.
    $t->abort_get('/x', $_->cookie) for @users[0 .. 99];
    $t->abort_get('/x', $_->cookie, rst => 1) for @users[100 .. 199];
    # 100 hang up while parked, 300 ms later, half of them with a reset; 30 of their
    # credentials are shared with patient clients, whose call must go on.
    local $SIG{PIPE} = 'IGNORE';
    my @socks = map {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port, Timeout => 5) or die $@;
        print $s OryTest::_request_bytes('GET', '/x', $_->cookie);
        $s->flush;
        $s;
    } @users[200 .. 299];
    my $patient = $t->background(sub {
        wrong_identities($t->parallel_get([map { ['/x', $_->cookie] } @users[200 .. 229]]), @users[200 .. 229]);
    });
    sleep 0.3;
    for my $i (0 .. $#socks) {
        setsockopt $socks[$i], SOL_SOCKET, SO_LINGER, pack('ii', 1, 0) if $i % 2;
        close $socks[$i];
    }
    is $patient->(), 0, 'the 30 patient clients sharing a call with one that left got 200 with their identity';

    sleep 0.7;    # every delayed answer has arrived
    my $res = $t->parallel_get([map { ['/x', $_->cookie] } @users]);
    is wrong_identities($res, @users), 0, 'all 300 credentials, asked again: 200 with their own identity';
    my $calls = $t->kratos_calls->{count};
    cmp_ok $calls, '<=', 600, "at most two whoami calls per credential ($calls)";
    still_serving('afterwards');
};

subtest 'five reloads under load, requests parked across each' => sub {
    my @slow = $t->users(20, 300);    # /nocache/: every request parks 300 ms
    my @cached = $t->users(20, 100);
    my @requests = ((map { ['/nocache/x', $_->cookie] } @slow), map { ['/x', $_->cookie] } @cached);
    my @expect = (@slow, @cached);
    my $stop = $t->prefix . '/stop-load';
    # Two load processes doing rounds of 40 parallel requests, the second one half a round
    # behind, so that requests are in flight at every moment.
    my @loads = map {
        my $n = $_;
        $t->background(sub {
            sleep 0.15 if $n == 2;
            my %n = (rounds => [], responses => 0, ok => 0, wrong_identity => 0, not_200 => 0, errors => 0);
            my @bad;
            while (!-e $stop) {
                my $start = time;
                my $res = $t->parallel_get(\@requests, timeout => 15);
                push @{ $n{rounds} }, [$start, time];
                for my $i (0 .. $#requests) {
                    my $r = $res->[$i];
                    $n{responses}++;
                    if ($r->{status} == 0) { $n{errors}++; push @bad, "error: $r->{error}" }
                    elsif ($r->{status} != 200) { $n{not_200}++; push @bad, "status $r->{status}" }
                    elsif (($r->{json}{headers}{'x-user-id'} // '') ne $expect[$i]{id}) {
                        $n{wrong_identity}++;
                        push @bad, "$expect[$i]{cookie} got " . ($r->{json}{headers}{'x-user-id'} // 'none');
                    }
                    else { $n{ok}++ }
                }
            }
            return { %n, bad => [@bad[0 .. ($#bad < 9 ? $#bad : 9)]] };
        });
    } 1, 2;
    my @generations = (join ',', $t->worker_pids);
    my @reloads;
    sleep 0.5;
    for (1 .. 5) {
        push @reloads, time;
        $t->reload;
        push @generations, join ',', $t->worker_pids;
        sleep 0.6;
    }
    open my $fh, '>', $stop or die;
    close $fh;
    my %n = (responses => 0, ok => 0, wrong_identity => 0, not_200 => 0, errors => 0);
    my (@rounds, @bad);
    for my $load (@loads) {
        my $r = $load->() // {};
        $n{$_} += $r->{$_} // 0 for keys %n;
        push @rounds, @{ $r->{rounds} // [] };
        push @bad, @{ $r->{bad} // [] };
    }
    my %seen = map { $_ => 1 } @generations;
    is scalar(keys %seen), 6, 'six generations of workers ran';
    my @uncovered = grep { my $at = $_; !grep { $_->[0] < $at && $at < $_->[1] } @rounds } @reloads;
    is scalar(@uncovered), 0, sprintf 'every reload came while requests were in flight (%d rounds, %d requests)',
        scalar(@rounds), $n{responses};
    is $n{errors}, 0, 'no connection error';
    is $n{not_200}, 0, 'no status other than 200';
    is $n{wrong_identity}, 0, 'no request got another user\'s identity';
    is $n{ok}, $n{responses}, 'every request answered 200 with its own identity'
        or diag explain \@bad;
    ok $t->wait_for(sub { master_children() == 1 }, timeout => 10), 'every old worker exited';
    is scalar(() = $t->log_lines(qr/\[notice\].*gracefully shutting down/)), 5, 'five old workers shut down gracefully';
    still_serving('after the reloads');
};

# ---------------------------------------------------------------------------------------------
# A minimal HTTP/2 client over cleartext with prior knowledge: enough to open streams, reset
# them, drop the connection, and read responses (status and body).
package H2 {
    use IO::Select;
    use Socket qw(SOL_SOCKET SO_LINGER IPPROTO_TCP TCP_NODELAY);
    use Time::HiRes qw(time);
    use JSON::PP;

    my %INDEXED_STATUS = (0x88 => 200, 0x89 => 204, 0x8a => 206, 0x8b => 304, 0x8c => 400, 0x8d => 404, 0x8e => 500);

    sub frame ($type, $flags, $sid, $payload) {
        return substr(pack('N', length $payload), 1, 3) . pack('CCN', $type, $flags, $sid) . $payload;
    }

    # HPACK integer with an N-bit prefix.
    sub int_ ($v, $bits, $flags = 0) {
        my $max = 2**$bits - 1;
        return chr($flags | $v) if $v < $max;
        my $out = chr($flags | $max);
        $v -= $max;
        while ($v >= 128) { $out .= chr(($v % 128) + 128); $v = int($v / 128) }
        return $out . chr($v);
    }

    # Literal header field without indexing, new name, no Huffman coding.
    sub literal ($name, $value) { "\x00" . int_(length $name, 7) . $name . int_(length $value, 7) . $value }

    sub new ($class, $port) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5)
            or die "h2: cannot connect: $@\n";
        setsockopt $s, IPPROTO_TCP, TCP_NODELAY, 1;
        my $self = bless { s => $s, in => '', next => 1, streams => {} }, $class;
        # Preface; SETTINGS_INITIAL_WINDOW_SIZE 1 GiB; the connection window raised as much.
        $self->send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" . frame(4, 0, 0, pack('nN', 4, 2**30))
            . frame(8, 0, 0, pack('N', 2**30)));
        return $self;
    }

    sub send ($self, $bytes) {
        local $SIG{PIPE} = 'IGNORE';
        return 0 if $self->{closed};
        my $off = 0;
        while ($off < length $bytes) {
            my $n = syswrite $self->{s}, $bytes, length($bytes) - $off, $off;
            if (!defined $n) { next if $!{EAGAIN} || $!{EINTR}; return 0 }
            $off += $n;
        }
        return 1;
    }

    # Opens a stream with a GET; returns its id.
    sub get ($self, $path, @headers) {
        my $sid = $self->{next};
        $self->{next} += 2;
        my $block = literal(':method', 'GET') . literal(':scheme', 'http') . literal(':path', $path)
            . literal(':authority', 'localhost');
        while (my ($n, $v) = splice @headers, 0, 2) { $block .= literal(lc $n, $v) }
        $self->{streams}{$sid} = { status => 0, body => '', done => 0 };
        $self->send(frame(1, 0x4 | 0x1, $sid, $block));    # END_HEADERS | END_STREAM
        return $sid;
    }

    sub cancel ($self, $sid) {
        $self->{streams}{$sid}{cancelled} = 1;
        $self->send(frame(3, 0, $sid, pack('N', 0x8)));    # RST_STREAM CANCEL
    }

    # GOAWAY, then a reset of the TCP connection, streams still open.
    sub drop ($self) {
        $self->send(frame(7, 0, 0, pack('NN', $self->{next} - 2, 0)));
        setsockopt $self->{s}, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0);
        close $self->{s};
        $self->{closed} = 1;
    }

    # Reads frames until every stream in @$sids is done (or the timeout); returns the streams.
    # With no stream given, reads frames for $timeout seconds.
    sub wait ($self, $sids, $timeout = 10) {
        my $deadline = time + $timeout;
        my $sel = IO::Select->new($self->{s});
        while (@$sids ? grep { !$self->{streams}{$_}{done} } @$sids : time < $deadline) {
            my $left = $deadline - time;
            last if $left <= 0 || $self->{closed};
            next unless $sel->can_read($left);
            my $n = sysread $self->{s}, my $buf, 65536;
            if (!$n) { $self->{closed} = 1; last }
            $self->{in} .= $buf;
            $self->frames;
        }
        return map { $self->{streams}{$_} } @$sids;
    }

    sub frames ($self) {
        while (length $self->{in} >= 9) {
            my ($hi, $lo, $type, $flags, $sid) = unpack 'CnCCN', $self->{in};
            my $len = $hi << 16 | $lo;
            last if length $self->{in} < 9 + $len;
            my $payload = substr $self->{in}, 9, $len;
            substr($self->{in}, 0, 9 + $len) = '';
            $sid &= 0x7fffffff;
            my $st = $self->{streams}{$sid};
            if ($type == 4 && !($flags & 1)) {
                $self->send(frame(4, 1, 0, ''));    # SETTINGS ACK
            } elsif ($type == 6 && !($flags & 1)) {
                $self->send(frame(6, 1, 0, $payload));    # PING ACK
            } elsif ($type == 7) {
                $self->{goaway} = unpack 'x4N', $payload;
            } elsif ($st && ($type == 0 || $type == 1)) {
                $payload = substr $payload, 1, length($payload) - 1 - ord($payload) if $flags & 0x8;    # PADDED
                if ($type == 1) {
                    $payload = substr $payload, 5 if $flags & 0x20;    # PRIORITY
                    my $b = ord $payload;
                    $st->{status} = $INDEXED_STATUS{$b}
                        // ($b == 0x48 ? substr($payload, 2, ord(substr $payload, 1, 1) & 0x7f) + 0 : -1);
                } else {
                    $st->{body} .= $payload;
                }
                if ($flags & 0x1) {
                    $st->{done} = 1;
                    $st->{json} = eval { decode_json($st->{body}) };
                }
            } elsif ($st && $type == 3) {
                $st->{rst} = unpack 'N', $payload;
                $st->{done} = 1;
            }
        }
    }
}

# ---------------------------------------------------------------------------------------------

subtest 'HTTP/2: the raw client works' => sub {
    my $h2 = H2->new($t->port('h2'));
    my @users = $t->users(10, 100);
    my @sids = map { $h2->get('/nocache/x', $_->cookie) } @users;
    push @sids, $h2->get('/x', Cookie => 'ory_kratos_session=jane-cookie');
    push @sids, $h2->get('/x', Cookie => 'ory_kratos_session=nobody');
    my @st = $h2->wait(\@sids);
    is_deeply [map { $_->{status} } @st], [(200) x 11, 401], 'ten users and jane 200, an unknown cookie 401';
    is_deeply [map { $_->{json}{headers}{'x-user-id'} } @st[0 .. 10]], [(map { $_->{id} } @users), $JANE],
        'each with its own identity';
    $h2->drop;
};

subtest 'HTTP/2: streams reset and connections dropped while parked, under h2load' => sub {
    my $h2load = `sh -c 'command -v h2load'`;
    chomp $h2load;
    my $load_out = $t->prefix . '/h2load.out';
    my $load_pid;
    if ($h2load) {
        $load_pid = fork // die;
        if (!$load_pid) {
            open STDOUT, '>', $load_out;
            open STDERR, '>&', \*STDOUT;
            { exec $h2load, '-n', 2000, '-c', 20, '-m', 10, '-H', 'cookie: ory_kratos_session=jane-cookie',
                'http://127.0.0.1:' . $t->port('h2') . '/nocache/h2load' }
            POSIX::_exit(127);
        }
    } else {
        fail 'h2load is not installed (scripts/deps --test installs it): the storm runs without its load';
    }

    # Connection A: 100 streams parked on 1 s answers; 50 reset after 200 ms, then the
    # connection is dropped with the other 50 still parked.
    my @a_users = $t->users(100, 1000);
    my $ca = H2->new($t->port('h2'));
    my @ca_sids = map { $ca->get('/nocache/a', $_->cookie) } @a_users;
    # Connection B: 60 streams reset between 200 and 500 ms, around the moment their answer
    # arrives (300 ms, later when Kratos is busy), so that some resets race with the result
    # being handed to the request.
    my @b_users = $t->users(60, 300);
    my $cb = H2->new($t->port('h2'));
    my $t0 = time;
    my @cb_sids = map { $cb->get('/nocache/b', $_->cookie) } @b_users;
    # Connection C: 50 streams that stay, sharing their credentials with streams of A that
    # are reset (25) or dropped with their connection (25).
    my @shared = map { $a_users[2 * $_ + $_ % 2] } 0 .. 49;
    my $cc = H2->new($t->port('h2'));
    my @cc_sids = map { $cc->get('/nocache/c', $_->cookie) } @shared;

    $ca->wait([], 0.2);
    $ca->cancel($ca_sids[$_]) for grep { $_ % 2 } 0 .. $#ca_sids;
    my @order = sort { $a->[0] <=> $b->[0] } map { [0.2 + rand(0.3), $_] } @cb_sids;
    for my $at (@order) {
        my $wait = $t0 + $at->[0] - time;
        $cb->wait([], $wait) if $wait > 0;
        $cb->cancel($at->[1]);
    }
    $ca->wait([], 0.1);
    $ca->drop;
    my @c_st = $cc->wait(\@cc_sids, 10);
    is scalar(grep { $c_st[$_]{status} == 200 && ($c_st[$_]{json}{headers}{'x-user-id'} // '') eq $shared[$_]{id} } 0 .. 49),
        50, 'the 50 streams sharing calls with reset streams: 200 with their own identity';
    my @b_st = $cb->wait(\@cb_sids, 2);
    is scalar(grep { $_->{status} != 0 && $_->{status} != 200 } @b_st), 0,
        'the raced streams that were answered before their reset: 200 (' . scalar(grep { $_->{status} } @b_st) . ' of 60)';
    $cb->drop;
    $cc->drop;

    if ($load_pid) {
        waitpid $load_pid, 0;
        my $out = OryTest::_slurp($load_out);
        like $out, qr/requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout/,
            'h2load: 2000 requests succeeded' or diag $out;
        like $out, qr/status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx/, 'h2load: all 200';
    }

    sleep 0.5;    # the answers of every reset stream have arrived (and found nobody)
    # Asked again, 80 streams per connection (nginx allows 128 at once on one).
    my @again = (@a_users, @b_users);
    my @st;
    for (my $i = 0; $i < @again; $i += 80) {
        my $h2 = H2->new($t->port('h2'));
        my $last = $i + 79 < $#again ? $i + 79 : $#again;
        push @st, $h2->wait([map { $h2->get('/x', $_->cookie) } @again[$i .. $last]], 10);
        $h2->drop;
    }
    my @bad = grep { !($st[$_]{status} == 200 && ($st[$_]{json}{headers}{'x-user-id'} // '') eq $again[$_]{id}) } 0 .. $#again;
    is scalar(@bad), 0, 'every credential of the storm, asked again over HTTP/2: 200 with its own identity'
        or diag explain [map { "$again[$_]{cookie}: status $st[$_]{status}" . ($st[$_]{rst} ? " rst $st[$_]{rst}" : '') } @bad[0 .. 4]];
    still_serving('after the HTTP/2 storm');
};

subtest 'no slot of ory_session_max_pending leaked' => sub {
    # 400 slots: 380 calls at once are refused only if more than 20 slots were never freed.
    my @users = $t->users(380, 300);
    my $res = $t->parallel_get([map { ['/nocache/x', $_->cookie] } @users]);
    my $refused = grep { $_->{status} == 503 } @$res;
    is $refused, 0, '380 new calls at once: none refused';
    is wrong_identities($res, @users), 0, 'all 200 with their own identity';
};

is scalar(() = $t->log_lines(qr/exited on signal|\[alert\]|\[crit\]/)), 0, 'no worker crashed';
$t->stop;
done_testing;
