# Parked requests are safe whatever happens to them: many at once, clients hanging up,
# timeouts, reloads and graceful shutdown while they wait for Kratos.
use v5.36;
use Test::More;
use Time::HiRes qw(sleep);
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest qw(wrong_identities);

my $t = OryTest->new->serve(<<'EOF');
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

sub requests (@users) { [map { ['/app', $_->cookie] } @users] }

subtest '200 parked requests, each resumed with its own identity' => sub {
    $t->kratos_reset;
    my @users = $t->users(200, 500);
    my $responses = $t->parallel_get(requests(@users), timeout => 30);
    is scalar @$responses, 200, '200 responses';
    is wrong_identities($responses, @users), 0, 'every request got 200 with its own user id';
    is $t->kratos_calls->{count}, 200, 'one whoami call per credential';
};

subtest 'clients hanging up while parked' => sub {
    my @users = $t->users(100, 700);
    $t->abort_get('/app', $_->cookie, after_ms => 0) for @users[0 .. 49];
    $t->abort_get('/app', $_->cookie, rst => 1) for @users[50 .. 99];
    sleep 1.5;
    my @fresh = $t->users(20, 0);
    is wrong_identities($t->parallel_get(requests(@fresh)), @fresh), 0,
        'the worker keeps serving after 100 aborted parked requests';
    is scalar($t->worker_pids), 1, 'the same worker is running';
};

subtest 'a parked request times out with 504' => sub {
    my @users = $t->users(1, 2000);
    my $r = $t->get('/short/x', $users[0]->cookie);
    is $r->{status}, 504, '504 after ory_session_timeout';
    sleep 2;    # the stub's late answer arrives to a request that is gone
    my @fresh = $t->users(5, 0);
    is wrong_identities($t->parallel_get(requests(@fresh)), @fresh), 0, 'later requests are fine';
};

# Runs parallel requests in a child process; returns a sub that waits and gives the responses.
sub in_background ($requests) {
    my $wait = $t->background(sub {
        [map { { status => $_->{status}, json => $_->{json} } } @{ $t->parallel_get($requests, timeout => 30) }];
    });
    return sub { $wait->() // [] };
}

subtest 'a request that joins a call keeps its own timeout' => sub {
    # The call is started from /short/ (300 ms); a request to / (10 s) joins it and must
    # get the answer, not the other location's 504.
    my @users = $t->users(1, 700);
    my $short = in_background([['/short/x', $users[0]->cookie]]);
    sleep 0.1;
    my $r = $t->get('/app', $users[0]->cookie);
    is $r->{status}, 200, 'the joining request gets 200';
    is $r->{json}{headers}{'x-user-id'}, $users[0]{id}, 'with its identity';
    is $short->()->[0]{status}, 504, 'the short-timeout request got 504';
};

subtest 'a reload while requests are parked' => sub {
    my @users = $t->users(50, 1500);
    my $old_workers = join ',', $t->worker_pids;
    my $wait = in_background(requests(@users));
    sleep 0.5;
    $t->reload;
    isnt join(',', $t->worker_pids), $old_workers, 'new workers run';
    my $responses = $wait->();
    is scalar @$responses, 50, 'every parked request was answered';
    is wrong_identities($responses, @users), 0, 'with 200 and its own identity';
    my @fresh = $t->users(10, 0);
    is wrong_identities($t->parallel_get(requests(@fresh)), @fresh), 0, 'the new workers serve';
};

subtest 'graceful shutdown answers parked requests first' => sub {
    my @users = $t->users(30, 1500);
    my $wait = in_background(requests(@users));
    sleep 0.5;
    my $master = $t->nginx_pid;
    $t->stop_nginx;
    ok !OryTest::_alive($master), 'nginx exited';
    my $responses = $wait->();
    is wrong_identities($responses, @users), 0, 'all 30 parked requests got 200 with their identity'
        or diag explain [ map { $_->{status} } @$responses ];
    ok scalar($t->log_lines(qr/\[notice\].*exit$/)) > 0, 'the worker exited normally';
};

$t->stop;
done_testing;
