# ory_session_status: Prometheus counters aggregated across workers, kept across a reload,
# and $ory_session_kratos_time for access logs.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $t = OryTest->new->serve(<<'EOF', worker_processes => 2);
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_session_timeout 1s;
    ory_session_cache_size 1;
    log_format ory '$request_uri $status kratos_time=$ory_session_kratos_time cache=$ory_session_cache_status';

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        access_log logs/ory.log ory;

        location / {
            ory_session on;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /login-required/ {
            ory_session on;
            ory_session_login_url https://auth.example.com/login;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location = /status {
            ory_session_status;
        }
    }
EOF

sub metrics {
    my $r = $t->get('/status');
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        my ($series, $value) = /^(\S+) (\S+)$/ or next;
        $m{$series} = $value;
    }
    return ($r, \%m);
}

my %jane = (Cookie => 'ory_kratos_session=jane-cookie');
# Fresh connections land on either worker: 2 workers, so the figures must add up over both.
$t->get('/a', %jane) for 1 .. 10;
$t->get('/a') for 1 .. 3;
$t->get('/a', Cookie => 'ory_kratos_session=nobody');
$t->get('/login-required/x', Accept => 'text/html');
$t->kratos_behaviour({ mode => 'status', status => 500, count => 1 });
$t->get('/a', Cookie => 'ory_kratos_session=bob-cookie');
$t->kratos_behaviour({ mode => 'normal', delay_ms => 2000, count => 1 });
$t->get('/a', 'X-Session-Token' => 'ory_st_alice');

my ($r, $m) = metrics();
is $r->{status}, 200, 'status answers 200';
like $r->{headers}{'content-type'}, qr{^text/plain; version=0.0.4}, 'Prometheus text format';
is $m->{'ory_session_decisions_total{outcome="allowed"}'}, 10, 'allowed, summed over workers';
is $m->{'ory_session_decisions_total{outcome="unauthenticated"}'}, 4, '401s';
is $m->{'ory_session_decisions_total{outcome="redirect"}'}, 1, 'redirects';
is $m->{'ory_session_decisions_total{outcome="bad_gateway"}'}, 1, '502s';
is $m->{'ory_session_decisions_total{outcome="timeout"}'}, 1, '504s';
my $calls = $t->kratos_calls->{count};
is $m->{ory_session_whoami_calls_total}, $calls, 'whoami calls match what Kratos saw';
is $m->{ory_session_whoami_in_flight}, 0, 'none in flight';
is $m->{ory_session_cache_hits_total} + $m->{ory_session_cache_misses_total}, 13,
    'one cache lookup per request with a credential';
ok $m->{ory_session_cache_entries} >= 1 && $m->{ory_session_cache_entries} <= 2, 'jane cached in one or two workers';
is $m->{'ory_session_whoami_duration_seconds_bucket{le="+Inf"}'}, $calls - 1,
    'latency recorded for every answered call (not the one that timed out)';

# One entry per worker: of four new sessions over two workers, at least two push one out.
$t->get('/a', @$_) for [Cookie => 'ory_kratos_session=bob-cookie'], [Cookie => 'ory_kratos_session=alice-cookie'],
    ['X-Session-Token' => 'ory_st_jane'], ['X-Session-Token' => 'ory_st_bob'];
(undef, $m) = metrics();
ok $m->{ory_session_cache_evictions_total} >= 2, 'a full cache counts its evictions';

$t->reload(old_gone => 1);
my (undef, $after) = metrics();
is $after->{'ory_session_decisions_total{outcome="allowed"}'}, 14, 'counters survive a reload';
is $after->{ory_session_cache_evictions_total}, $m->{ory_session_cache_evictions_total},
    'evictions stay counted after the workers that made them have exited';
is $after->{ory_session_cache_entries}, 0, 'their entries left with them';

is $t->request(method => 'POST', path => '/status', body => 'x')->{status}, 405, 'POST is not allowed';

my @log = split /\n/, do { local $/; open my $fh, '<', $t->prefix . '/logs/ory.log' or die; <$fh> };
ok scalar(grep { m{^/a 200 kratos_time=\d+\.\d{3} cache=MISS$} } @log) >= 1, '$ory_session_kratos_time on a miss';
ok scalar(grep { m{^/a 200 kratos_time= cache=HIT$} } @log) >= 1, 'and empty on a hit';
ok scalar(grep { m{^/a 504 kratos_time=(0\.9|1\.0)\d\d } } @log) == 1, 'about the timeout on a 504';

$t->stop;
done_testing;
