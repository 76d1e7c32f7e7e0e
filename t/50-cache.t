# The per-worker session cache: what is reused, for how long, what is never stored, what
# evicts what, and how concurrent misses share one whoami call. Every rule is proved by the
# number of whoami calls the Kratos stub received, and by $ory_session_cache_status.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use OryTest;

# Every location checks sessions, passes the user id upstream and shows the cache status.
my $COMMON = <<'EOF';
        ory_session on;
        proxy_set_header X-User-Id $ory_user_id;
        add_header X-Cache-Status $ory_session_cache_status always;
EOF

# The main server: default cache size (10000), TTL 60s and negative TTL 10s on /, other
# values per location.
my $t = OryTest->new->serve(<<"EOF");
    ory_session_kratos_url %%KRATOS_URL%%;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
$COMMON
        location / {
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /ttl1/ {
            ory_session_cache_ttl 1s;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /ttl0/ {
            ory_session_cache_ttl 0;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /neg1/ {
            ory_session_cache_negative_ttl 1s;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /neg0/ {
            ory_session_cache_negative_ttl 0;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /short/ {
            ory_session_timeout 300ms;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /prefixed/ {
            ory_session_kratos_url %%KRATOS_URL%%/.ory;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /named/ {
            ory_session_cookie ory_session_*;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF

# Another nginx with one location, /, and the cache size $size.
sub with_cache_size ($size) {
    return OryTest->new->serve(<<"EOF");
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_session_cache_size $size;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
$COMMON
        location / {
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF
}
my $small = with_cache_size(3);    # a tiny cache, for eviction
my $off = with_cache_size(0);      # no cache at all

sub rfc3339 ($at) {
    return strftime('%Y-%m-%dT%H:%M:%S', gmtime int $at) . sprintf('.%03dZ', ($at - int $at) * 1000);
}

# Adds a new session to the stub of $o, so that no two tests share a cache entry. %entry
# goes into the stub's sessions-file entry (delay_ms, headers, ...), `session` into its
# session object. Returns the user: name, identity id, and header pairs for each kind of
# credential.
my $users = 0;
sub add_user ($o, %entry) {
    my $k = ++$users;
    my $name = "user$k";
    my $id = sprintf 'cace0000-0000-4000-8000-%012d', $k;
    my %session = (identity => { id => $id }, %{ delete $entry{session} // {} });
    $o->kratos_add_sessions({ sessions => [{
        name => $name, credentials => ["$name-cookie", "ory_st_$name"], session => \%session, %entry,
    }] });
    return {
        name => $name, id => $id, value => "$name-cookie",
        cookie => [Cookie => "ory_kratos_session=$name-cookie"],
        token  => ['X-Session-Token' => "ory_st_$name"],
    };
}

# A credential the stub does not know.
my $strangers = 0;
sub stranger () { [Cookie => 'ory_kratos_session=stranger-' . ++$strangers . "-$$"] }

sub calls ($o) { $o->kratos_calls->{count} }

# One request: status, cache status ('' when the header is absent) and the user id the
# upstream received.
sub ask ($o, $path, @headers) {
    my $r = $o->get($path, @headers);
    return {
        status => $r->{status},
        cache  => $r->{headers}{'x-cache-status'} // '',
        user   => $r->{json} ? $r->{json}{headers}{'x-user-id'} : undef,
        raw    => $r,
    };
}

# One request, checked: its status, its cache status, the whoami calls it caused and, for a
# 200, the user the upstream got.
sub step ($o, $label, $path, $headers, %want) {
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $before = calls($o);
    my $r = ask($o, $path, @$headers);
    my $calls = calls($o) - $before;
    is $r->{status}, $want{status}, "$label: $want{status}";
    is $r->{cache}, $want{cache}, "$label: cache status '$want{cache}'" if exists $want{cache};
    is $calls, $want{calls}, "$label: $want{calls} whoami call(s)";
    is $r->{user}, $want{user}, "$label: the upstream gets the user id" if $want{user};
    return $r;
}

# ---------------------------------------------------------------------------------------------

subtest 'repeated requests with one credential: one whoami call' => sub {
    my $u = add_user($t);
    step($t, 'first request', '/', $u->{cookie}, status => 200, cache => 'MISS', calls => 1, user => $u->{id});
    my $before = calls($t);
    my (@statuses, @ids);
    for (2 .. 20) {
        my $r = ask($t, '/', @{ $u->{cookie} });
        push @statuses, "$r->{status} $r->{cache}";
        push @ids, $r->{user} // '';
    }
    is_deeply \@statuses, [('200 HIT') x 19], 'the 19 next requests: 200 from the cache';
    is_deeply \@ids, [($u->{id}) x 19], 'with the cached identity';
    is calls($t) - $before, 0, 'no whoami call for them: 1 call in all';

    my $v = add_user($t);
    step($t, 'another credential', '/', $v->{cookie}, status => 200, cache => 'MISS', calls => 1, user => $v->{id});
};

subtest 'no credential: no cache status, no call' => sub {
    step($t, 'no credential', '/', [], status => 401, cache => '', calls => 0);
    step($t, 'a credential refused without asking', '/', ['X-Session-Token' => 'has space'],
        status => 401, cache => '', calls => 0);
};

subtest '200 concurrent first requests share one whoami call' => sub {
    my $u = add_user($t, delay_ms => 500);
    my $before = calls($t);
    my $t0 = time;
    my $res = $t->parallel_get([map { ['/', @{ $u->{cookie} }] } 1 .. 200]);
    my $took = time - $t0;
    is calls($t) - $before, 1, 'one whoami call';
    is scalar(grep { $_->{status} == 200 } @$res), 200, '200 answers 200';
    is scalar(grep { ($_->{json}{headers}{'x-user-id'} // '') eq $u->{id} } @$res), 200,
        'every upstream request carries the user id';
    is scalar(grep { ($_->{headers}{'x-cache-status'} // '') eq 'MISS' } @$res), 200,
        'all were misses that waited for the call';
    cmp_ok $took, '>=', 0.45, 'they did wait for the delayed answer';
    step($t, 'the next request', '/', $u->{cookie}, status => 200, cache => 'HIT', calls => 0, user => $u->{id});
};

subtest 'concurrent requests share a rejection' => sub {
    my $bad = stranger();
    $t->kratos_behaviour({ mode => 'normal', delay_ms => 500, count => 1 });
    my $before = calls($t);
    my $res = $t->parallel_get([map { ['/', @$bad] } 1 .. 20]);
    is calls($t) - $before, 1, 'one whoami call';
    is_deeply [map { $_->{status} } @$res], [(401) x 20], 'all 20 get 401';
    step($t, 'the next request', '/', $bad, status => 401, cache => 'HIT', calls => 0);
};

subtest 'concurrent requests share an error, which is not cached' => sub {
    my $u = add_user($t);
    $t->kratos_behaviour({ mode => 'status', status => 500, delay_ms => 500, count => 1 });
    my $before = calls($t);
    my $res = $t->parallel_get([map { ['/', @{ $u->{cookie} }] } 1 .. 20]);
    is calls($t) - $before, 1, 'one whoami call';
    is_deeply [map { $_->{status} } @$res], [(502) x 20], 'all 20 get 502';
    step($t, 'the next request asks again', '/', $u->{cookie}, status => 200, cache => 'MISS', calls => 1,
        user => $u->{id});
};

subtest 'an entry is not used past the session\'s expires_at, whatever the TTL' => sub {
    my $expires = time + 2;
    # A fixed expires_at: once it has passed, Kratos answers an expired session.
    my $u = add_user($t, session => { expires_at => rfc3339($expires) });
    step($t, 'first request', '/', $u->{cookie}, status => 200, cache => 'MISS', calls => 1, user => $u->{id});
    step($t, 'before expiry', '/', $u->{cookie}, status => 200, cache => 'HIT', calls => 0, user => $u->{id});
    sleep $expires + 0.3 - time;
    step($t, 'after expiry, TTL 60s', '/', $u->{cookie}, status => 401, cache => 'EXPIRED', calls => 1);
    step($t, 'the rejection is cached', '/', $u->{cookie}, status => 401, cache => 'HIT', calls => 0);
};

subtest 'Ory-Session-Cache-For is honoured' => sub {
    my $u = add_user($t, headers => { 'Ory-Session-Cache-For' => '1' });
    step($t, 'first request', '/', $u->{cookie}, status => 200, cache => 'MISS', calls => 1, user => $u->{id});
    step($t, 'within 1 s', '/', $u->{cookie}, status => 200, cache => 'HIT', calls => 0, user => $u->{id});
    sleep 1.2;
    step($t, 'after 1 s, TTL 60s', '/', $u->{cookie}, status => 200, cache => 'EXPIRED', calls => 1, user => $u->{id});
    step($t, 'stored again', '/', $u->{cookie}, status => 200, cache => 'HIT', calls => 0, user => $u->{id});
};

subtest 'ory_session_cache_ttl 1s: EXPIRED once it elapsed; a revoked session lives until then' => sub {
    my $u = add_user($t);
    # Kratos allows 60 s: the configured TTL still wins.
    my $v = add_user($t, headers => { 'Ory-Session-Cache-For' => '60' });
    step($t, 'u: first request', '/ttl1/', $u->{cookie}, status => 200, cache => 'MISS', calls => 1, user => $u->{id});
    step($t, 'v: first request', '/ttl1/', $v->{cookie}, status => 200, cache => 'MISS', calls => 1, user => $v->{id});
    $t->kratos_add_sessions({ sessions => [{ name => $u->{name}, credentials => [$u->{value}], status => 401 }] });
    step($t, 'u: revoked in Kratos, still cached', '/ttl1/', $u->{cookie}, status => 200, cache => 'HIT', calls => 0,
        user => $u->{id});
    step($t, 'v: within 1 s', '/ttl1/', $v->{cookie}, status => 200, cache => 'HIT', calls => 0, user => $v->{id});
    sleep 1.2;
    step($t, 'u: after 1 s', '/ttl1/', $u->{cookie}, status => 401, cache => 'EXPIRED', calls => 1);
    step($t, 'v: after 1 s', '/ttl1/', $v->{cookie}, status => 200, cache => 'EXPIRED', calls => 1, user => $v->{id});
};

subtest 'ory_session_cache_ttl 0: every request asks Kratos' => sub {
    my $u = add_user($t);
    step($t, "request $_", '/ttl0/', $u->{cookie}, status => 200, cache => 'BYPASS', calls => 1, user => $u->{id})
        for 1 .. 3;
};

subtest 'ory_session_cache_size 3: least recently used evicted first' => sub {
    my %u = map { $_ => add_user($small) } qw(a b c d);
    my $go = sub ($label, $who, %want) {
        local $Test::Builder::Level = $Test::Builder::Level + 1;
        step($small, "$label ($who)", '/', $u{$who}{cookie}, status => 200, user => $u{$who}{id}, %want);
    };
    $go->('fill', $_, cache => 'MISS', calls => 1) for qw(a b c);
    $go->('use the oldest', 'a', cache => 'HIT', calls => 0);
    $go->('a fourth user', 'd', cache => 'MISS', calls => 1);      # evicts b, now the oldest
    $go->('recently used, kept', 'a', cache => 'HIT', calls => 0);
    $go->('kept', 'c', cache => 'HIT', calls => 0);
    $go->('kept', 'd', cache => 'HIT', calls => 0);
    $go->('evicted', 'b', cache => 'MISS', calls => 1);          # evicts a
    $go->('evicted by b', 'a', cache => 'MISS', calls => 1);
};

subtest 'rejections are cached' => sub {
    for my $case (
        ['unknown cookie'   => stranger()],
        ['unknown token'    => ['X-Session-Token' => "ory_st_nobody_$$"]],
        ['inactive session' => [Cookie => 'ory_kratos_session=inactive-cookie']],
        ['expired session'  => [Cookie => 'ory_kratos_session=expired-cookie']],
        ['revoked session'  => [Cookie => 'ory_kratos_session=revoked-cookie']],
    ) {
        my ($name, $headers) = @$case;
        step($t, "$name, first", '/', $headers, status => 401, cache => 'MISS', calls => 1);
        step($t, "$name, again", '/', $headers, status => 401, cache => 'HIT', calls => 0);
    }
};

subtest 'rejections never evict sessions (ory_session_cache_size 3)' => sub {
    my @u = map { add_user($small) } 1 .. 3;
    step($small, "$_->{name}: cached", '/', $_->{cookie}, status => 200, cache => 'MISS', calls => 1) for @u;
    my @bad = map { stranger() } 1 .. 20;
    my $before = calls($small);
    my @statuses = map { ask($small, '/', @$_)->{status} } @bad;
    is_deeply \@statuses, [(401) x 20], '20 unknown cookies: 401';
    is calls($small) - $before, 20, 'each asked Kratos once';
    step($small, "$_->{name}: still cached", '/', $_->{cookie}, status => 200, cache => 'HIT', calls => 0,
        user => $_->{id}) for @u;
    # Rejections have their own LRU of the same size: the last 3 are kept, older ones not.
    step($small, "unknown cookie $_: kept", '/', $bad[$_ - 1], status => 401, cache => 'HIT', calls => 0)
        for 20, 19, 18;
    step($small, 'unknown cookie 1: evicted', '/', $bad[0], status => 401, cache => 'MISS', calls => 1);
};

subtest 'ory_session_cache_negative_ttl 1s' => sub {
    my $late = stranger();
    my ($value) = $late->[1] =~ /=(.*)/;
    step($t, 'unknown', '/neg1/', $late, status => 401, cache => 'MISS', calls => 1);
    # The credential becomes valid in Kratos: the rejection is still reused for 1 s.
    my $id = 'cace0000-0000-4000-8000-100000000001';
    $t->kratos_add_sessions({ sessions => [{ name => 'late', credentials => [$value],
        session => { identity => { id => $id } } }] });
    step($t, 'within 1 s', '/neg1/', $late, status => 401, cache => 'HIT', calls => 0);
    sleep 1.2;
    step($t, 'after 1 s', '/neg1/', $late, status => 200, calls => 1, user => $id);
    step($t, 'then cached as a session', '/neg1/', $late, status => 200, cache => 'HIT', calls => 0, user => $id);
};

subtest 'ory_session_cache_negative_ttl 0: every rejected request asks Kratos' => sub {
    my $bad = stranger();
    step($t, "unknown cookie, request $_", '/neg0/', $bad, status => 401, calls => 1) for 1 .. 3;
    my $u = add_user($t);
    step($t, 'a session is still cached: first', '/neg0/', $u->{cookie}, status => 200, cache => 'MISS', calls => 1);
    step($t, 'a session is still cached: again', '/neg0/', $u->{cookie}, status => 200, cache => 'HIT', calls => 0);
};

subtest 'ory_session_cache_size 0: every request asks Kratos' => sub {
    my $u = add_user($off);
    step($off, "session, request $_", '/', $u->{cookie}, status => 200, cache => 'BYPASS', calls => 1,
        user => $u->{id}) for 1 .. 3;
    my $bad = stranger();
    step($off, "unknown cookie, request $_", '/', $bad, status => 401, cache => 'BYPASS', calls => 1) for 1 .. 3;
};

subtest 'errors are never cached' => sub {
    for my $case (
        [502 => '/',       { mode => 'status', status => 500, count => 1 }],
        [503 => '/',       { mode => 'status', status => 429, count => 1 }],
        [504 => '/short/', { mode => 'normal', delay_ms => 1000, count => 1 }],
    ) {
        my ($status, $path, $behaviour) = @$case;
        my $u = add_user($t);
        $t->kratos_behaviour($behaviour);
        step($t, "$status", $path, $u->{cookie}, status => $status, cache => 'MISS', calls => 1);
        step($t, "after $status: asks again", $path, $u->{cookie}, status => 200, cache => 'MISS', calls => 1,
            user => $u->{id});
        step($t, "after $status: then cached", $path, $u->{cookie}, status => 200, cache => 'HIT', calls => 0,
            user => $u->{id});
    }
};

subtest '403 (AAL too low) is never cached' => sub {
    step($t, "request $_", '/', [Cookie => 'ory_kratos_session=aal2-required-cookie'],
        status => 403, cache => 'MISS', calls => 1) for 1 .. 2;
};

subtest 'the cache key: credential kind, cookie name, value and whoami URL' => sub {
    my $u = add_user($t);
    my $v = $u->{value};
    my %as = (
        cookie => [Cookie => "ory_kratos_session=$v"],
        token  => ['X-Session-Token' => $v],
        bearer => [Authorization => "Bearer $v"],
    );
    step($t, "as a $_", '/', $as{$_}, status => 200, cache => 'MISS', calls => 1, user => $u->{id})
        for qw(cookie token bearer);
    step($t, "as a $_, again", '/', $as{$_}, status => 200, cache => 'HIT', calls => 0, user => $u->{id})
        for qw(cookie token bearer);

    step($t, 'cookie ory_session_a', '/named/', [Cookie => "ory_session_a=$v"], status => 200, cache => 'MISS',
        calls => 1, user => $u->{id});
    step($t, 'cookie ory_session_b, same value', '/named/', [Cookie => "ory_session_b=$v"], status => 200,
        cache => 'MISS', calls => 1, user => $u->{id});
    step($t, 'cookie ory_session_a, again', '/named/', [Cookie => "ory_session_a=$v"], status => 200,
        cache => 'HIT', calls => 0, user => $u->{id});

    step($t, 'another whoami URL', '/prefixed/', $as{cookie}, status => 200, cache => 'MISS', calls => 1,
        user => $u->{id});
    step($t, 'another whoami URL, again', '/prefixed/', $as{cookie}, status => 200, cache => 'HIT', calls => 0,
        user => $u->{id});
};

subtest 'a client that leaves does not cancel the call shared with others' => sub {
    my $u = add_user($t, delay_ms => 600);
    my $before = calls($t);
    # The five start (and share) the call; the sixth joins it, then resets its connection.
    my $leaving = $t->background(sub {
        sleep 0.15;
        $t->abort_get('/', @{ $u->{cookie} }, rst => 1);
        0;
    });
    my $res = $t->parallel_get([map { ['/', @{ $u->{cookie} }] } 1 .. 5]);
    is $leaving->(), 0, 'the leaving client sent its request';
    is_deeply [map { $_->{status} } @$res], [(200) x 5], 'the five others get 200';
    is_deeply [map { $_->{json}{headers}{'x-user-id'} // '' } @$res], [($u->{id}) x 5], 'with the user id';
    is calls($t) - $before, 1, 'one whoami call';
    step($t, 'the answer was cached', '/', $u->{cookie}, status => 200, cache => 'HIT', calls => 0, user => $u->{id});
};

subtest 'a waiter that times out does not cancel the call for the others' => sub {
    my $u = add_user($t, delay_ms => 800);
    my $before = calls($t);
    # Five requests start the call (timeout 5 s); two join it from a location with a 300 ms
    # timeout, and give up.
    my $joined = $t->background(sub {
        sleep 0.15;
        my $res = $t->parallel_get([map { ['/short/', @{ $u->{cookie} }] } 1 .. 2]);
        (grep { $_->{status} == 504 } @$res) == 2 ? 0 : 1;
    });
    my $res = $t->parallel_get([map { ['/', @{ $u->{cookie} }] } 1 .. 5]);
    is $joined->(), 0, 'the two that joined from /short/ get 504';
    is_deeply [map { $_->{status} } @$res], [(200) x 5], 'the five others get 200';
    is_deeply [map { $_->{json}{headers}{'x-user-id'} // '' } @$res], [($u->{id}) x 5], 'with the user id';
    is calls($t) - $before, 1, 'one whoami call';
};

$_->stop for $t, $small, $off;
done_testing;
