# The shared zone over time, with 4 workers: a zone too small for its users evicts the least
# recently used entries without failing a request; the entries survive a reload that keeps
# the zone's name and size, and a zone of another size starts empty; configuration mistakes
# are `nginx -t` errors that name the directive and its place. t/59-zone-scale.t has the
# 1,000 users; both use OryTest::zone_config.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest qw(wrong_identities);

my $WORKERS = 4;

# Waits until the old workers of a reload are gone, so that new connections reach new ones.
sub settled ($t) {
    my $master = $t->nginx_pid;
    $t->wait_for(sub {
        my @children = grep { ((OryTest::_slurp("/proc/$_/stat") =~ /\) \S+ (\d+)/)[0] // 0) == $master }
            map { m{/proc/(\d+)$} ? $1 : () } glob '/proc/[0-9]*';
        @children == $WORKERS;
    }, timeout => 10) or die "old workers did not exit\n";
}

subtest 'a full zone evicts the least recently used, and fails no request' => sub {
    # No front cache: every lookup goes to the zone, so its LRU order is what is tested.
    my $t = OryTest->new->serve(OryTest::zone_config('256k', front => 0), worker_processes => $WORKERS);
    my ($hot, @cold) = $t->users(801, 0);
    my ($bad, $hot_bad) = (0, 0);
    for my $u (@cold) {
        $bad += wrong_identities([$t->get('/', $u->cookie)], $u);
        $hot_bad += wrong_identities([$t->get('/', $hot->cookie)], $hot);
    }
    is $bad, 0, '800 users let through with their own identity while the zone churns';
    is $hot_bad, 0, 'and the one used all along';
    my $evictions = $t->zone_series('evictions_total');
    my $entries = $t->zone_series('entries');
    cmp_ok $evictions, '>', 0, "the zone evicted ($evictions entries, $entries held)";
    note "a 256k zone holds $entries sessions of the Kratos double";
    cmp_ok $entries, '<', 800, 'it could not hold them all';
    $t->kratos_reset;
    is $t->get('/', $hot->cookie)->{headers}{'x-cache-status'}, 'HIT', 'the one used all along is still there';
    is $t->get('/', $cold[-1]->cookie)->{headers}{'x-cache-status'}, 'HIT', 'the newest is still there';
    is $t->get('/', $cold[-2]->cookie)->{headers}{'x-cache-status'}, 'HIT', 'and the one before it';
    is $t->kratos_calls->{count}, 0, 'no whoami call for them';
    is $t->get('/', $cold[0]->cookie)->{headers}{'x-cache-status'}, 'MISS', 'the oldest was evicted';
    is $t->get('/', $cold[1]->cookie)->{headers}{'x-cache-status'}, 'MISS', 'and the next oldest';
    is $t->kratos_calls->{count}, 2, 'they are asked for again';
    is scalar($t->log_lines(qr/ngx_slab_alloc\(\) failed|no memory/)), 0, 'a full zone logs nothing';
};

subtest 'reload: the zone keeps its entries, unless its size changes' => sub {
    my $t = OryTest->new->serve(OryTest::zone_config('1m'), worker_processes => $WORKERS);
    my @users = $t->users(50, 0);
    $t->parallel_get([map { ['/', $_->cookie] } @users]);
    my $before = $t->zone_series('entries');
    is $before, 50, 'the zone holds 50 sessions';
    $t->reload;
    settled($t);
    $t->kratos_reset;
    my $res = $t->parallel_get([map { ['/', $_->cookie] } @users]);
    is wrong_identities($res, @users), 0, 'the new workers let every user through';
    is $t->kratos_calls->{count}, 0, 'from the zone kept across the reload';
    is scalar(grep { $_->{headers}{'x-cache-status'} eq 'HIT' } @$res), 50, 'every request a hit';

    $t->write_config(OryTest::zone_config('2m'), worker_processes => $WORKERS);
    $t->reload;
    settled($t);
    $t->kratos_reset;
    $res = $t->parallel_get([map { ['/', $_->cookie] } @users]);
    is wrong_identities($res, @users), 0, 'after a reload with another size, every user is let through';
    is $t->kratos_calls->{count}, 50, 'a zone of another size starts empty: each session is asked for again';
    is $t->zone_series('size_bytes'), 2 * 1024 * 1024, 'the new size is in use';
};

subtest 'configuration errors name the directive and its place' => sub {
    my $t = OryTest->new;
    my @cases = (
        ['ory_cache nope;', qr/unknown ory_cache_zone "nope" in "ory_cache" directive in \S+nginx\.conf:\d+/],
        ['ory_cache_zone z:10q;', qr/invalid value "z:10q" in "ory_cache_zone" directive, invalid zone size in \S+nginx\.conf:\d+/],
        ['ory_cache_zone z:64k;', qr/"ory_cache_zone" directive, the zone must be at least 256k in \S+nginx\.conf:\d+/],
        ['ory_cache_zone z;', qr/invalid value "z" in "ory_cache_zone" directive, it must be NAME:SIZE in \S+nginx\.conf:\d+/],
        ["ory_cache_zone z:1m;\n    ory_cache_zone z:2m;", qr/ory_cache_zone "z" is duplicate in \S+nginx\.conf:\d+/],
        ['ory_cache_zone ory_session:1m;', qr/"ory_session" names the module's counters in \S+nginx\.conf:\d+/],
        ["ory_cache_zone z:1m;\n    ory_cache z;\n    ory_cache z;", qr/"ory_cache" directive is duplicate in \S+nginx\.conf:\d+/],
        ['server { location / { ory_cache_zone z:1m; } }', qr/"ory_cache_zone" directive is not allowed here in \S+nginx\.conf:\d+/],
    );
    for my $case (@cases) {
        my ($conf, $want) = @$case;
        $t->write_config("    $conf\n");
        my ($code, $out) = $t->nginx_test;
        isnt $code, 0, "nginx -t fails for: $conf";
        like $out, $want, '... saying why and where';
    }
    $t->write_config("    ory_cache_zone z:1m;\n    ory_cache z;\n    server { location / { ory_cache off; } }\n");
    my ($code, $out) = $t->nginx_test;
    is $code, 0, 'a valid configuration passes' or diag $out;
};

done_testing;
