# Parked requests are safe whatever happens to them: many at once, clients hanging up,
# timeouts, reloads and graceful shutdown while they wait for Kratos.
use v5.36;
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep);
use JSON::PP;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $t = OryTest->new;
$t->start_kratos;
$t->start_backend;
$t->write_config(<<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_session_timeout 10s;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        location / {
            ory_session on;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /short/ {
            ory_session on;
            ory_session_timeout 300ms;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF
$t->start_nginx;

# $n users whose whoami answers take $delay_ms, so that their requests are all parked at once.
my $generation = 0;
sub slow_users ($n, $delay_ms) {
    $generation++;
    my @users = map { { cookie => "g$generation-user-$_", id => "g$generation-id-$_" } } 1 .. $n;
    $t->kratos_add_sessions({ sessions => [ map { {
        name => $_->{cookie}, credentials => [$_->{cookie}], delay_ms => $delay_ms,
        session => { identity => { id => $_->{id} } },
    } } @users ] });
    return @users;
}

sub requests (@users) {
    return [ map { ['/app', Cookie => "ory_kratos_session=$_->{cookie}"] } @users ];
}

# Every response is 200 and carries its own user's id.
sub all_own_identity ($responses, @users) {
    my $wrong = 0;
    for my $i (0 .. $#users) {
        my $r = $responses->[$i];
        $wrong++ unless $r->{status} == 200 && ($r->{json}{headers}{'x-user-id'} // '') eq $users[$i]{id};
    }
    return $wrong;
}

subtest '200 parked requests, each resumed with its own identity' => sub {
    $t->kratos_reset;
    my @users = slow_users(200, 500);
    my $responses = $t->parallel_get(requests(@users), timeout => 30);
    is scalar @$responses, 200, '200 responses';
    is all_own_identity($responses, @users), 0, 'every request got 200 with its own user id';
    is $t->kratos_calls->{count}, 200, 'one whoami call per credential';
};

subtest 'clients hanging up while parked' => sub {
    my @users = slow_users(100, 700);
    $t->abort_get('/app', Cookie => "ory_kratos_session=$_->{cookie}", after_ms => 0) for @users[0 .. 49];
    $t->abort_get('/app', Cookie => "ory_kratos_session=$_->{cookie}", rst => 1) for @users[50 .. 99];
    sleep 1.5;
    my @fresh = slow_users(20, 0);
    is all_own_identity($t->parallel_get(requests(@fresh)), @fresh), 0,
        'the worker keeps serving after 100 aborted parked requests';
    is scalar($t->worker_pids), 1, 'the same worker is running';
};

subtest 'a parked request times out with 504' => sub {
    my @users = slow_users(1, 2000);
    my $r = $t->get('/short/x', Cookie => "ory_kratos_session=$users[0]{cookie}");
    is $r->{status}, 504, '504 after ory_session_timeout';
    sleep 2;    # the stub's late answer arrives to a request that is gone
    my @fresh = slow_users(5, 0);
    is all_own_identity($t->parallel_get(requests(@fresh)), @fresh), 0, 'later requests are fine';
};

# Runs parallel requests in a child process; returns a sub that waits and gives the responses.
sub in_background ($requests) {
    my $file = $t->prefix . "/responses-$generation.json";
    my $pid = fork // die;
    if (!$pid) {
        my $responses = $t->parallel_get($requests, timeout => 30);
        open my $fh, '>', $file or POSIX::_exit(1);
        print $fh encode_json([ map { { status => $_->{status}, json => $_->{json} } } @$responses ]);
        close $fh;
        POSIX::_exit(0);
    }
    return sub {
        waitpid $pid, 0;
        open my $fh, '<', $file or return [];
        return decode_json(do { local $/; <$fh> });
    };
}

subtest 'a request that joins a call keeps its own timeout' => sub {
    # The call is started from /short/ (300 ms); a request to / (10 s) joins it and must
    # get the answer, not the other location's 504.
    my @users = slow_users(1, 700);
    my $cookie = "ory_kratos_session=$users[0]{cookie}";
    my $short = in_background([['/short/x', Cookie => $cookie]]);
    sleep 0.1;
    my $r = $t->get('/app', Cookie => $cookie);
    is $r->{status}, 200, 'the joining request gets 200';
    is $r->{json}{headers}{'x-user-id'}, $users[0]{id}, 'with its identity';
    is $short->()->[0]{status}, 504, 'the short-timeout request got 504';
};

subtest 'a reload while requests are parked' => sub {
    my @users = slow_users(50, 1500);
    my $old_workers = join ',', $t->worker_pids;
    my $wait = in_background(requests(@users));
    sleep 0.5;
    $t->reload;
    isnt join(',', $t->worker_pids), $old_workers, 'new workers run';
    my $responses = $wait->();
    is scalar @$responses, 50, 'every parked request was answered';
    is all_own_identity($responses, @users), 0, 'with 200 and its own identity';
    my @fresh = slow_users(10, 0);
    is all_own_identity($t->parallel_get(requests(@fresh)), @fresh), 0, 'the new workers serve';
};

subtest 'graceful shutdown answers parked requests first' => sub {
    my @users = slow_users(30, 1500);
    my $wait = in_background(requests(@users));
    sleep 0.5;
    my $master = $t->nginx_pid;
    $t->stop_nginx;
    ok !OryTest::_alive($master), 'nginx exited';
    my $responses = $wait->();
    is all_own_identity($responses, @users), 0, 'all 30 parked requests got 200 with their identity'
        or diag explain [ map { $_->{status} } @$responses ];
    ok scalar($t->log_lines(qr/\[notice\].*exit$/)) > 0, 'the worker exited normally';
};

$t->stop;
done_testing;
