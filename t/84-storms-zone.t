# The lifecycle storms of t/81-storms.t (clients hanging up while parked, reloads under load,
# HTTP/2 resets), with every session stored in a shared zone.
use v5.36;
use FindBin;

$ENV{ORY_TEST_ZONE} = 1;
my $file = "$FindBin::Bin/81-storms.t";
do $file;
die "t/84-storms-zone.t: $file failed to run: $@" if $@;
