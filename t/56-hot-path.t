# The hot path, counted: scripts/hotpath runs nginx under valgrind's callgrind and serves the
# same requests with no check, with a cache hit, with a cache hit whose variables are used,
# and with a session and a permission check both answered from the cache. A hit must add no
# heap call, no system call, no lock call and no work on the module's client threads. These
# are counts, not timings: the machine's load cannot change them.
# The uncached scenario (a whoami call per request) is the control: it shows that allocations,
# system calls and the client thread's work are seen when they happen.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest qw(give_up);
use File::Temp qw(tempdir);
use JSON::PP;

my $t = OryTest->new;    # for the binaries the other tests use
local $ENV{TEST_NGINX_BINARY} = $t->nginx_binary;
local $ENV{TEST_ORY_MODULE} = $t->module_path;

my $dir = tempdir(CLEANUP => 1);
my $requests = 1000;
my ($code, $out) = OryTest::run("$OryTest::TOP/scripts/hotpath", '--requests', $requests, '--json', "$dir/hotpath.json");
# Without results (a tool missing, nginx failing under valgrind) nothing else can be checked.
is $code, 0, 'scripts/hotpath ran' or give_up("scripts/hotpath failed (exit $code):\n$out");
my $r = decode_json(OryTest::_slurp("$dir/hotpath.json"))->{scenarios};
note $out;

sub sum ($h) { my $s = 0; $s += $_ for values %$h; $s }

my $plain = $r->{plain};
# The instrument sees what it must: nginx's own request pools are heap calls, every request
# is a recv and a writev, and a whoami call shows up on the client thread.
cmp_ok sum($plain->{heap_calls}), '>=', 2, 'plain nginx: its request pools are counted as heap calls';
cmp_ok $plain->{syscalls}, '>=', 2, 'plain nginx: its recv and writev are counted as system calls';
my $call = $r->{uncached};
cmp_ok $call->{other_threads_instructions}, '>', 10_000,
    'a whoami call: the client thread\'s work is counted';
cmp_ok sum($call->{heap_calls}) - sum($plain->{heap_calls}), '>', 5,
    'a whoami call: its allocations are counted';
cmp_ok $call->{syscalls} - $plain->{syscalls}, '>', 1, 'a whoami call: its system calls are counted';

for my $name ('hit', 'hit+variables', 'hit+zone', 'hit+permission') {
    my $c = $r->{$name};
    # Slack for a timer or a log write during the whole run, never one per request.
    cmp_ok abs(sum($c->{heap_calls}) - sum($plain->{heap_calls})), '<', 0.02,
        "$name: no heap call beyond plain nginx's";
    cmp_ok $c->{syscalls} - $plain->{syscalls}, '<', 0.02, "$name: no system call beyond plain nginx's";
    is sum($c->{lock_calls}), sum($plain->{lock_calls}), "$name: no lock call";
    cmp_ok $c->{other_threads_instructions} - $plain->{other_threads_instructions}, '<', 2,
        "$name: no work on the module's client thread";
    cmp_ok $c->{instructions}, '>', $plain->{instructions}, "$name: the check does run";
}

# The shared zone's front cache: a hit costs what a per-worker hit costs, within 5%.
cmp_ok $r->{'hit+zone'}{instructions} / $r->{hit}{instructions}, '<=', 1.05,
    'hit+zone: within 5% of a per-worker hit\'s instructions';

done_testing;
