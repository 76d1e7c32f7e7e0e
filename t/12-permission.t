# ory_permission: every Keto answer and every input maps to one status, the tuple asked is
# the one the configuration names, answers are cached and shared, and a parked check is as
# safe as a parked whoami call.
use v5.36;
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $BOB  = '6a1f2e3d-4c5b-4a69-8788-99aabbccddee';

my $t = OryTest->new;
$t->start_kratos;
$t->start_backend;
$t->start_keto(tuples => [
    "documents:readme#viewer\@$JANE",
    "documents:readme#owner\@$BOB",
    "documents:readme#viewer\@ci-robot",
    "documents:secret#viewer\@groups:eng#member",
    "groups:eng#member\@$BOB",
    "documents:report#viewer\@groups:eng#member",
    "documents:notes#viewer\@$JANE",
    "documents:plan#viewer\@$JANE",
    "documents:plan#owner\@$BOB",
    "documents:keyed#viewer\@$BOB",
]);
$t->write_config(<<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_permission_url %%KETO_URL%%;
    ory_permission_timeout 2s;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        add_header X-Permission-Cache $ory_permission_cache_status always;

        location /readme {
            ory_session on;
            ory_permission documents readme viewer;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location ~ ^/doc/(\w+)$ {
            ory_session on;
            ory_permission documents $1 viewer;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /arg {
            ory_session on;
            ory_permission documents $arg_doc viewer;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /both {
            ory_session on;
            ory_permission documents plan viewer;
            ory_permission documents plan owner;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /group {
            ory_session on;
            ory_permission documents report viewer groups:eng#member;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /robot {
            ory_permission documents readme viewer $http_x_robot;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /keyed {
            ory_session on;
            ory_permission_header Authorization "Bearer ory_pat_demo";
            ory_permission documents keyed viewer;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /anonymous {
            ory_permission documents readme viewer;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /uncached {
            ory_session on;
            ory_permission documents readme viewer;
            ory_permission_cache_ttl 0;
            ory_permission_cache_negative_ttl 0;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /short {
            ory_session on;
            ory_permission documents readme viewer;
            ory_permission_timeout 300ms;
            ory_permission_cache_ttl 0;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /dead {
            ory_session on;
            ory_permission_url http://127.0.0.1:%%PORT_dead%%;
            ory_permission documents readme viewer;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location = /status {
            ory_session_status;
        }
    }
EOF
$t->start_nginx;

my @jane = (Cookie => 'ory_kratos_session=jane-cookie');
my @bob  = (Cookie => 'ory_kratos_session=bob-cookie');

# One request with fresh counters; returns (response, the Keto calls it caused, new log lines).
sub check ($path, @headers) {
    $t->keto_reset;
    my $before = () = $t->log_lines(qr/ory_permission: /);
    my $r = $t->get($path, @headers);
    my @lines = $t->log_lines(qr/ory_permission: /);
    return ($r, $t->keto_calls, [@lines[$before .. $#lines]]);
}

subtest 'allowed: the request goes on, Keto is asked for exactly the tuple' => sub {
    my ($r, $calls, $log) = check('/readme', @jane);
    is $r->{status}, 200, 'answered 200';
    is $calls->{count}, 1, 'one check call';
    my $q = $calls->{requests}[0]{params};
    is_deeply { map { $_ => $q->{$_} } qw(namespace object relation subject_id) },
        { namespace => 'documents', object => 'readme', relation => 'viewer', subject_id => $JANE },
        'the tuple: the session\'s identity as the subject';
    like $calls->{requests}[0]{path}, qr{^/relation-tuples/check/openapi$}, 'the openapi check route';
    is $r->{headers}{'x-permission-cache'}, 'MISS', 'cache status MISS';
    is scalar @$log, 0, 'nothing logged';

    ($r, $calls) = check('/readme', @jane);
    is $r->{status}, 200, 'again: 200';
    is $calls->{count}, 0, 'from the cache';
    is $r->{headers}{'x-permission-cache'}, 'HIT', 'cache status HIT';
};

subtest 'denied: 403, logged at info, cached' => sub {
    my ($r, $calls, $log) = check('/readme', @bob);
    is $r->{status}, 403, 'answered 403';
    is $calls->{count}, 1, 'one check call';
    is scalar @$log, 1, 'one log line';
    like $log->[0] // '', qr/\[info\] .*ory_permission: Keto denied permission 1 while checking permission, client: /,
        'the reason, at info';
    unlike $log->[0] // '', qr/\Q$BOB\E/, 'the subject is not logged';
    ($r, $calls) = check('/readme', @bob);
    is $r->{status}, 403, 'again: 403';
    is $calls->{count}, 0, 'the denial is cached';
};

subtest 'a browser that is denied gets 403, not a login redirect' => sub {
    my ($r) = check('/readme', @bob, Accept => 'text/html');
    is $r->{status}, 403, 'answered 403';
    ok !$r->{headers}{location}, 'no Location';
};

subtest 'objects from a regex capture and from the query' => sub {
    my ($r, $calls) = check('/doc/secret', @bob);
    is $r->{status}, 200, 'capture: a member of the group that may view it is allowed';
    is $calls->{requests}[0]{params}{object}, 'secret', 'capture: the object asked';
    ($r) = check('/doc/secret', @jane);
    is $r->{status}, 403, 'capture: someone else is denied';
    ($r, $calls) = check('/arg?doc=notes', @jane);
    is $r->{status}, 200, 'query argument: allowed';
    is $calls->{requests}[0]{params}{object}, 'notes', 'query argument: the object asked';
};

subtest 'an empty argument is denied without asking Keto' => sub {
    for my $path ('/arg', '/arg?doc=') {
        my ($r, $calls, $log) = check($path, @jane);
        is $r->{status}, 403, "$path: 403";
        is $calls->{count}, 0, "$path: Keto not asked";
        like $log->[0] // '', qr/\[info\] .*ory_permission: the object is empty in permission 1 while checking permission/,
            "$path: logged at info";
    }
};

subtest 'two checks: both must allow, in order' => sub {
    $t->keto_tuples({ tuples => ["documents:plan#owner\@$JANE"] });
    my ($r, $calls) = check('/both', @jane);
    is $r->{status}, 200, 'viewer and owner: 200';
    is $calls->{count}, 2, 'both asked at once';
    ($r) = check('/both', @bob);
    is $r->{status}, 403, 'owner but not viewer: 403';
    $t->keto_tuples({ tuples => [] });
};

subtest 'ory_permission_header reaches Keto, and only Keto' => sub {
    my ($r, $calls) = check('/keyed', @bob);
    is $r->{status}, 200, 'answered 200';
    is $calls->{requests}[0]{headers}{authorization}, 'Bearer ory_pat_demo', 'the API key was sent';
    ($r, $calls) = check('/doc/report', @bob);
    ok !exists $calls->{requests}[0]{headers}{authorization}, 'not where it is not configured';
    is $t->kratos_calls->{requests}[-1]{headers}{authorization}, undef, 'and never to Kratos';
};

subtest 'a subject set as SUBJECT' => sub {
    my ($r, $calls) = check('/group', @jane);
    is $r->{status}, 200, 'answered 200';
    is_deeply { map { $_ => $calls->{requests}[0]{params}{$_} } qw(subject_set.namespace subject_set.object subject_set.relation) },
        { 'subject_set.namespace' => 'groups', 'subject_set.object' => 'eng', 'subject_set.relation' => 'member' },
        'asked with the subject set';
    ok !exists $calls->{requests}[0]{params}{subject_id}, 'and no subject id';
};

subtest 'an explicit SUBJECT needs no authentication' => sub {
    my ($r) = check('/robot', 'X-Robot' => 'ci-robot');
    is $r->{status}, 200, 'allowed subject: 200';
    ($r) = check('/robot', 'X-Robot' => 'intruder');
    is $r->{status}, 403, 'other subject: 403';
    my $calls;
    ($r, $calls) = check('/robot');
    is $r->{status}, 403, 'no subject: 403';
    is $calls->{count}, 0, 'and Keto is not asked';
};

subtest 'no authenticated subject: the authentication outcome, no Keto call' => sub {
    my ($r, $calls) = check('/readme');
    is $r->{status}, 401, 'no session: 401 from the session check';
    is $calls->{count}, 0, 'Keto not asked';
    ($r, $calls) = check('/readme', Cookie => 'ory_kratos_session=nobody-cookie', Accept => 'text/html');
    is $r->{status}, 401, 'an unknown session: 401';
    is $calls->{count}, 0, 'Keto not asked';
    my $log;
    ($r, $calls, $log) = check('/anonymous');
    is $r->{status}, 401, 'no session check in the location: 401';
    is $calls->{count}, 0, 'Keto not asked';
    like $log->[0] // '', qr/\[info\] .*no authenticated subject/, 'logged at info';
};

subtest 'Keto failures fail closed' => sub {
    for my $case (
        [500        => { mode => 'status', status => 500 }, 502, qr/\[error\] .*Keto answered 500 for permission 1 while checking permission/],
        [400        => { mode => 'status', status => 400 }, 502, qr/Keto answered 400/],
        [429        => { mode => 'status', status => 429 }, 503, qr/Keto rate-limited the request/],
        [close      => { mode => 'close' },                 502, qr/Keto is unreachable/],
        [reset      => { mode => 'reset' },                 502, qr/Keto is unreachable/],
        [garbage    => { mode => 'garbage' },               502, qr/Keto sent a malformed answer/],
        [oversize   => { mode => 'oversize' },              502, qr/Keto response body is larger than 1048576 bytes/],
        [wrong_type => { mode => 'wrong_type' },            502, qr/content type/],
        [slow       => { mode => 'normal', delay_ms => 1500 }, 504, qr/Keto did not answer within ory_permission_timeout/],
        [stall      => { mode => 'stall' },                 504, qr/Keto did not answer within ory_permission_timeout/],
    ) {
        my ($name, $behaviour, $status, $reason) = @$case;
        $t->keto_reset;
        $t->keto_behaviour($behaviour);
        my $before = () = $t->log_lines(qr/ory_permission: /);
        my $r = $t->get('/short', @jane);
        my @lines = $t->log_lines(qr/ory_permission: /);
        my @new = @lines[$before .. $#lines];
        is $r->{status}, $status, "$name: $status";
        is scalar @new, 1, "$name: logged once";
        like $new[0] // '', $reason, "$name: the reason";
        $t->keto_reset;
        is $t->get('/short', @jane)->{status}, 200, "$name: the next request is fine";
    }
    my ($r, $calls, $log) = check('/dead', @jane);
    is $r->{status}, 502, 'connection refused: 502';
    like $log->[0] // '', qr/Keto is unreachable \(connection refused\)/, 'the reason';
};

subtest '200 concurrent requests for one tuple: one call' => sub {
    $t->keto_reset;
    $t->keto_behaviour({ mode => 'normal', delay_ms => 500 });
    my $responses = $t->parallel_get([ map { ['/uncached', @jane] } 1 .. 200 ], timeout => 30);
    is scalar(grep { $_->{status} == 200 } @$responses), 200, 'all 200';
    is $t->keto_calls->{count}, 1, 'exactly one Keto call';
    $t->keto_reset;
};

subtest '10,000 requests over 100 tuples: 100 Keto calls' => sub {
    $t->keto_tuples({ tuples => [ map { "documents:doc-$_#viewer\@$JANE" } 1 .. 100 ] });
    $t->keto_reset;
    my $ok = 0;
    for my $round (1 .. 100) {
        my $rs = $t->parallel_get([ map { ["/arg?doc=doc-$_", @jane] } 1 .. 100 ]);
        $ok += grep { $_->{status} == 200 } @$rs;
    }
    is $ok, 10_000, '10,000 answers 200';
    my $calls = $t->keto_calls->{count};
    is $calls, 100, 'Keto got one call per tuple';
    note "Keto calls for 10,000 requests over 100 tuples: $calls";
};

subtest 'parked checks: client aborts, timeouts and a reload' => sub {
    $t->keto_reset;
    $t->keto_behaviour({ mode => 'normal', delay_ms => 700 });
    $t->abort_get('/uncached', @jane, after_ms => 0) for 1 .. 20;
    $t->abort_get('/uncached', @jane, rst => 1) for 1 .. 20;
    sleep 1.2;
    is $t->get('/uncached', @jane)->{status}, 200, 'after 40 aborted parked requests the worker serves';
    is scalar($t->worker_pids), 1, 'the same worker is running';

    $t->keto_behaviour({ mode => 'normal', delay_ms => 1500 });
    my $start = time;
    is $t->get('/short', @jane)->{status}, 504, 'a parked check times out with 504';
    cmp_ok time - $start, '<', 1.2, 'within its timeout';

    $t->keto_behaviour({ mode => 'normal', delay_ms => 800 });
    my $pid = fork // die;
    if (!$pid) {
        my $r = $t->parallel_get([ map { ['/uncached', @jane] } 1 .. 20 ], timeout => 20);
        POSIX::_exit((grep { $_->{status} == 200 } @$r) == 20 ? 0 : 1);
    }
    sleep 0.3;
    $t->reload;
    waitpid $pid, 0;
    is $? >> 8, 0, 'requests parked across a reload all get 200';
    $t->keto_reset;
    is $t->get('/uncached', @jane)->{status}, 200, 'the new workers serve';
};

subtest 'the status endpoint counts permission checks' => sub {
    my $text = $t->get('/status')->{body};
    like $text, qr/^ory_permission_decisions_total\{outcome="allowed"\} [1-9]\d*$/m, 'allowed decisions';
    like $text, qr/^ory_permission_decisions_total\{outcome="forbidden"\} [1-9]\d*$/m, 'forbidden decisions';
    like $text, qr/^ory_permission_cache_hits_total [1-9]\d*$/m, 'cache hits';
    like $text, qr/^ory_permission_check_calls_total [1-9]\d*$/m, 'check calls';
    like $text, qr/^ory_permission_check_in_flight 0$/m, 'nothing in flight';
    like $text, qr/^ory_permission_check_duration_seconds_count [1-9]\d*$/m, 'latency histogram';
};

subtest 'configuration errors' => sub {
    my $c = OryTest->new;
    my $server = sub ($location) {
        "ory_session_kratos_url http://127.0.0.1:1;\nserver {\n listen 127.0.0.1:%%HTTP_PORT%%;\n location / {\n$location\n }\n}\n";
    };
    for my $case (
        ['no URL', $server->('ory_permission documents readme viewer;'),
            qr/no "ory_permission_url" is defined for the "ory_permission" directive in \S+nginx\.conf:\d+/],
        ['two arguments', $server->('ory_permission_url http://k; ory_permission documents readme;'),
            qr/invalid number of arguments in "ory_permission" directive in \S+nginx\.conf:\d+/],
        ['five arguments', $server->('ory_permission_url http://k; ory_permission a b c d e;'),
            qr/invalid number of arguments in "ory_permission" directive/],
        ['a subject set without an object', $server->('ory_permission_url http://k; ory_permission a b c groups:#member;'),
            qr/invalid value "groups:#member" in "ory_permission" directive, .*subject set.* in \S+nginx\.conf:\d+/],
        ['a URL without a scheme', $server->('ory_permission_url keto:4466;'),
            qr/invalid value "keto:4466" in "ory_permission_url" directive, the scheme is missing/],
        ['a zero timeout', $server->('ory_permission_timeout 0;'),
            qr/"ory_permission_timeout" directive must be greater than zero/],
        ['an unknown variable', $server->('ory_permission_url http://k; ory_permission a $nonexistent_thing c;'),
            qr/unknown "nonexistent_thing" variable/],
    ) {
        my ($name, $http, $expect) = @$case;
        $c->write_config($http);
        my ($code, $out) = $c->nginx_test;
        isnt $code, 0, "$name: nginx -t fails";
        like $out, $expect, "$name: the message says what and where";
    }
};

done_testing;
