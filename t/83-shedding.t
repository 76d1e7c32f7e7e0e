# Load shedding: with `ory_session_max_pending N`, a worker keeps at most N whoami calls in
# flight. Requests that would start another are refused with 503 at once (not after Kratos'
# delay), logged at most once a second; requests that share a call already in flight, and
# cache hits, are never refused; and a slot is free again as soon as its call is over.
use v5.36;
use Test::More;
use List::Util qw(max min);
use Time::HiRes qw(sleep);
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';

my $t = OryTest->new->serve(<<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_session_max_pending 5;
    ory_session_timeout 5s;

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
my ($WORKER) = $t->worker_pids;

# Requests on their own connections, each sent `at` seconds after the start: spec {path, at,
# headers => [pairs]}; every response has `took`, the seconds until its last byte.
sub timed (@specs) { @{ $t->timed_get(\@specs) } }
sub shed_lines () { $t->log_lines(qr/ory_session_max_pending/) }

subtest '30 new credentials at once, 5 slots: 5 calls, 5 x 200 and 25 x 503 at once' => sub {
    $t->kratos_reset;
    my @users = $t->users(30, 1000);
    my @res = timed(map { { at => 0, headers => [$_->cookie] } } @users);
    my @ok = grep { $res[$_]{status} == 200 } 0 .. $#res;
    my @refused = grep { $res[$_]{status} == 503 } 0 .. $#res;
    is scalar(@ok), 5, 'five requests got 200';
    is scalar(@refused), 25, 'twenty-five got 503';
    is_deeply [grep { $res[$_]{json}{headers}{'x-user-id'} ne $users[$_]{id} } @ok], [],
        'each 200 with its own identity';
    cmp_ok max(map { $res[$_]{took} } @refused), '<', 0.5,
        sprintf 'the 503s came at once (last after %.2f s), not after the 1 s delay',
        max(map { $res[$_]{took} } @refused);
    cmp_ok min(map { $res[$_]{took} } @ok), '>=', 0.9, 'the 200s came after the delay';
    is $t->kratos_calls->{count}, 5, 'exactly five whoami calls';
    my @lines = shed_lines();
    is scalar(@lines), 1, 'one log line for the burst, not 25' or diag join "\n", @lines;
    like $lines[0] // '', qr/\[error\] .*ory_session: 5 whoami calls already in flight \(ory_session_max_pending\), request refused while checking session, client: 127\.0\.0\.1/,
        'saying why';

    # The slots are free again: the refused credentials (not cached, since errors never
    # are) and any other request work.
    my @again = @users[grep { $res[$_]{status} == 503 } 0 .. $#res];
    @again = @again[0 .. 4];
    $t->kratos_reset;
    my @res2 = timed(map { { at => 0, headers => [$_->cookie] } } @again);
    is_deeply [map { $_->{status} } @res2], [(200) x 5], 'five refused credentials, retried: 200';
    is_deeply [map { $_->{json}{headers}{'x-user-id'} } @res2], [map { $_->{id} } @again], 'with their identities';
    is $t->kratos_calls->{count}, 5, 'five calls';
    my $jane = $t->get('/', Cookie => 'ory_kratos_session=jane-cookie');
    is $jane->{status}, 200, 'and another user: 200';
    is $jane->{json}{headers}{'x-user-id'}, $JANE, 'with the identity';
};

subtest 'requests sharing a call in flight, and cache hits, are not refused' => sub {
    is $t->get('/', Cookie => 'ory_kratos_session=bob-cookie')->{status}, 200, 'bob is cached';
    sleep 1.1;    # the next shedding line is allowed again
    $t->kratos_reset;
    my $lines_before = () = shed_lines();
    my @users = $t->users(5, 1000);
    my ($extra) = $t->users(1, 1000);
    my @specs = (
        (map { { at => 0, headers => [$_->cookie] } } @users),                 # fill the 5 slots
        (map { my $u = $_; map { { at => 0.3, headers => [$u->cookie] } } 1 .. 4 } @users),   # join them
        { at => 0.3, headers => [$extra->cookie] },                            # a sixth call
        { at => 0.3, headers => [Cookie => 'ory_kratos_session=bob-cookie'] },   # a cache hit
    );
    my @res = timed(@specs);
    my @joined = @res[0 .. 24];
    is scalar(grep { $_->{status} == 200 } @joined), 25, 'the 5 callers and the 20 that joined them: 200';
    my @expected = ((map { $_->{id} } @users), map { my $u = $_; ($u->{id}) x 4 } @users);
    is_deeply [map { $_->{json}{headers}{'x-user-id'} } @joined], \@expected, 'each with its own identity';
    is $res[25]{status}, 503, 'a request that needs a sixth call: 503';
    cmp_ok $res[25]{took}, '<', 0.5, sprintf 'at once (%.2f s)', $res[25]{took};
    is $res[26]{status}, 200, 'a cache hit: 200 while the slots are full';
    cmp_ok $res[26]{took}, '<', 0.5, 'at once';
    is $t->kratos_calls->{count}, 5, 'five whoami calls for 25 requests';
    is scalar(shed_lines()) - $lines_before, 1, 'one log line';
};

subtest 'a call that timed out frees its slot at once' => sub {
    $t->kratos_reset;
    my @slow = $t->users(5, 2000);
    my @res = timed(map { { path => '/short/x', at => 0, headers => [$_->cookie] } } @slow);
    is_deeply [map { $_->{status} } @res], [(504) x 5], 'five calls time out after 300 ms: 504';
    cmp_ok max(map { $_->{took} } @res), '<', 1, 'well before Kratos answers';
    my @next = $t->users(5, 0);
    my @res2 = timed(map { { at => 0, headers => [$_->cookie] } } @next);
    is_deeply [map { $_->{status} } @res2], [(200) x 5],
        'five new calls while Kratos still works on the old ones: 200';
    is_deeply [map { $_->{json}{headers}{'x-user-id'} } @res2], [map { $_->{id} } @next], 'with their identities';
};

is join(',', $t->worker_pids), $WORKER, 'the same worker process served everything';
$t->stop;
done_testing;
