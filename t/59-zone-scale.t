# The shared zone at scale, with 4 workers: 1,000 users making 20 requests each, every one
# on a new connection spread over the workers by reuseport, cost one whoami call per user;
# without the zone each worker asks for itself (about four calls per user).
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest qw(wrong_identities);

my $WORKERS = 4;

# 20 rounds; in each, every user makes one request, 250 users at a time, each on a new
# connection. Returns (requests answered with the user's own identity, whoami calls).
sub rounds ($t, $path, @users) {
    $t->kratos_reset;
    my $wrong = 0;
    for my $round (1 .. 20) {
        for (my $i = 0; $i < @users; $i += 250) {
            my @batch = @users[$i .. ($i + 249 < $#users ? $i + 249 : $#users)];
            my $res = $t->parallel_get([map { [$path, $_->cookie] } @batch]);
            $wrong += wrong_identities($res, @batch);
        }
    }
    return (20 * @users - $wrong, $t->kratos_calls->{count});
}

subtest '1,000 credentials x 20 requests over new connections' => sub {
    my $t = OryTest->new->serve(OryTest::zone_config('10m'), worker_processes => $WORKERS);
    my @users = $t->users(1000, 0);
    my ($ok, $calls) = rounds($t, '/', @users);
    is $ok, 20_000, 'every request is let through with its own identity';
    is $calls, 1000, 'with the zone: one whoami call per credential';
    my ($ok_local, $calls_local) = rounds($t, '/local/', $t->users(1000, 0));
    is $ok_local, 20_000, 'without the zone too';
    cmp_ok $calls_local, '>', 2000, "without the zone: $calls_local whoami calls (each worker asks for itself)";
    note "1,000 credentials x 20 requests, $WORKERS workers: $calls whoami calls with the zone, "
        . "$calls_local without";
    my ($entries, $bytes) = ($t->zone_series('entries'), $t->zone_series('entry_bytes'));
    note sprintf 'zone: %d entries, %.0f bytes per entry', $entries, $bytes / $entries;
    is $entries, 1000, 'the zone holds the 1,000 sessions';
};

done_testing;
