# The shared cache zone with 4 workers, and logouts that take effect at once: an answer one
# worker fetched (a session, a permission, an access token) is a hit in every other; a logout through nginx (browser, API, one session,
# the other sessions) or a purge makes the next request of that credential fail on every
# worker. Which worker answered is told by $pid in a response header; requests go over new
# connections, which `listen ... reuseport` spreads over the workers.
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes qw(time sleep);
use OryTest;

my $WORKERS = 4;
my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';
my $t = OryTest->new;
$t->start_kratos;
$t->start_backend;
$t->start_keto(tuples => ["documents:readme#viewer\@$JANE"]);
$t->start_hydra;
$t->write_config(<<'EOF', worker_processes => $WORKERS);
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_permission_url %%KETO_URL%%;
    ory_oauth2_jwks_url %%HYDRA_URL%%/.well-known/jwks.json;
    ory_oauth2_introspection_url %%HYDRA_URL%%/admin/oauth2/introspect;
    ory_oauth2_issuer %%HYDRA_URL%%;
    ory_cache_zone sessions:10m;
    ory_cache sessions;

    upstream kratos_public {
        server 127.0.0.1:%%KRATOS_PORT%%;
    }

    server {
        listen 127.0.0.1:%%HTTP_PORT%% reuseport;
        # Every location's response tells its worker (no location has add_header of its own).
        add_header X-Worker $pid always;
        add_header X-Cache-Status $ory_session_cache_status always;
        add_header X-OAuth2-Cache $ory_oauth2_cache_status always;

        location / {
            ory_session on;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /docs/ {
            ory_session on;
            ory_permission documents readme viewer;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /api/ {
            ory_oauth2 on;
            proxy_set_header X-Sub $ory_oauth2_subject;
            proxy_set_header X-Scope $ory_oauth2_scope;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /local/ {
            ory_cache off;
            ory_session on;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        # Kratos' public API, proxied: logouts through here evict at once.
        location /.ory/ {
            ory_session_logout on;
            proxy_pass http://kratos_public/;
        }
        location = /purge {
            ory_cache_purge;
            allow 127.0.0.1;
            deny all;
        }
        location = /status {
            ory_session_status;
        }
    }
EOF
$t->start_nginx;
is scalar(my @w = $t->worker_pids), $WORKERS, "$WORKERS workers";

# Users of the double, each with sessions of its own: user(name, sessions => n) gives
# { cookies => [...], tokens => [...], session_ids => [...], identity => id }.
my $serial = 0;
sub user ($name, %o) {
    my $n = $o{sessions} // 1;
    my $u = { identity => "$name-identity-" . ++$serial };
    for my $i (1 .. $n) {
        my $id = sprintf '%08x-0000-4000-8000-%012d', $serial, $i;
        push @{ $u->{cookies} }, "$name-$serial-cookie-$i";
        push @{ $u->{tokens} }, "ory_st_$name${serial}x$i";
        push @{ $u->{session_ids} }, $id;
        $t->kratos_add_sessions({ sessions => [{
            name => "$name-$serial-$i", credentials => [$u->{cookies}[-1], $u->{tokens}[-1]],
            delay_ms => $o{delay_ms} // 0,
            session => { id => $id, identity => { id => $u->{identity} } },
        }] });
    }
    return $u;
}

sub cookie ($u, $i = 0) { (Cookie => "ory_kratos_session=$u->{cookies}[$i]") }
sub token ($u, $i = 0) { ('X-Session-Token' => $u->{tokens}[$i]) }
sub calls () { $t->kratos_calls->{count} }

# Requests on new connections until every worker has answered one; returns { pid => response }.
sub on_every_worker ($path, @headers) {
    my %by;
    for (1 .. 400) {
        my $r = $t->get($path, @headers);
        my $pid = $r->{headers}{'x-worker'} // 0;
        $by{$pid} //= $r;
        last if keys %by == $WORKERS;
    }
    return \%by;
}

sub statuses ($by) { join ' ', map { $by->{$_}{status} } sort keys %$by }

subtest 'an answer fetched by one worker is a hit in every other' => sub {
    my $u = user('shared');
    $t->kratos_reset;
    my $first = $t->get('/', cookie($u));
    is $first->{status}, 200, 'the first request is let through';
    is $first->{headers}{'x-cache-status'}, 'MISS', 'and asked Kratos';
    my $by = on_every_worker('/', cookie($u));
    is scalar(keys %$by), $WORKERS, "all $WORKERS workers answered";
    is statuses($by), join(' ', (200) x $WORKERS), 'every worker lets it through';
    is scalar(grep { $_->{headers}{'x-cache-status'} eq 'HIT' } values %$by), $WORKERS,
        'every worker answers from the zone';
    is calls(), 1, 'one whoami call for all of them';
    is $by->{$_}{json}{headers}{'x-user-id'}, $u->{identity}, "worker $_ passes the identity on" for sort keys %$by;

    # Without the zone, each worker asks for itself.
    $t->kratos_reset;
    my $local = on_every_worker('/local/', cookie($u));
    cmp_ok calls(), '>', 1, 'ory_cache off: every worker asks Kratos on its own (' . calls() . ' calls)';
};

subtest 'permission answers are shared too' => sub {
    $t->keto_reset;
    my $jane = on_every_worker('/docs/', Cookie => 'ory_kratos_session=jane-cookie');
    is statuses($jane), join(' ', (200) x $WORKERS), 'a viewer is let through on every worker';
    is $t->keto_calls->{count}, 1, 'one Keto call for all of them';
    my $bob = on_every_worker('/docs/', Cookie => 'ory_kratos_session=bob-cookie');
    is statuses($bob), join(' ', (403) x $WORKERS), 'someone else is refused on every worker';
    is $t->keto_calls->{count}, 2, 'one more Keto call: the refusal is shared too';
};

subtest 'access tokens are shared too' => sub {
    my $cached = sub ($by) { scalar grep { $_->{headers}{'x-oauth2-cache'} eq 'HIT' } values %$by };
    for my $kind (qw(opaque JWT)) {
        my $sub = "shared-$kind-subject";
        my $token = $kind eq 'JWT'
            ? $t->jwt(claims => { sub => $sub, scp => ['read'] })
            : $t->opaque_token(claims => { sub => $sub, scope => 'read' });
        $t->hydra_reset;
        my $by = on_every_worker('/api/x', Authorization => "Bearer $token");
        is statuses($by), join(' ', (200) x $WORKERS), "$kind: let through on every worker";
        # The first request verified or introspected it; the other workers found it in the zone.
        is $cached->($by), $WORKERS - 1, "$kind: the other workers answer from the zone";
        is $by->{$_}{json}{headers}{'x-sub'}, $sub, "$kind: worker $_ passes the subject on" for sort keys %$by;
        is $by->{$_}{json}{headers}{'x-scope'}, 'read', "$kind: worker $_ passes the scope on" for sort keys %$by;
        is $t->hydra_calls->{counts}{introspect}, $kind eq 'JWT' ? 0 : 1,
            "$kind: " . ($kind eq 'JWT' ? 'no introspection' : 'one introspection for all of them');
    }
    $t->hydra_reset;
    my $inactive = on_every_worker('/api/x', Authorization => 'Bearer ory_at_nobody-knows-this');
    is statuses($inactive), join(' ', (401) x $WORKERS), 'an inactive token: 401 on every worker';
    is $t->hydra_calls->{counts}{introspect}, 1, 'one introspection: the refusal is shared too';

    # A purge by identity id drops the tokens of that subject (Hydra's subject is the Kratos
    # identity id): the next request asks Hydra again.
    my $token = $t->opaque_token(claims => { sub => 'purged-subject' });
    on_every_worker('/api/x', Authorization => "Bearer $token");
    $t->hydra_reset;
    my $r = $t->request(method => 'DELETE', path => '/purge?identity_id=purged-subject');
    is_deeply $r->{json}, { purged => 1 }, 'the purge counts the token';
    my $again = $t->get('/api/x', Authorization => "Bearer $token");
    is $again->{status}, 200, 'still active at Hydra: 200';
    is $again->{headers}{'x-oauth2-cache'}, 'MISS', 'after the purge: not from the cache';
    is $t->hydra_calls->{counts}{introspect}, 1, 'Hydra asked again';
};

subtest 'a cold burst across the workers' => sub {
    my $u = user('burst', delay_ms => 300);
    $t->kratos_reset;
    my $res = $t->parallel_get([map { ['/', cookie($u)] } 1 .. 200]);
    is scalar(grep { $_->{status} == 200 } @$res), 200, '200 parallel requests let through';
    my %workers = map { ($_->{headers}{'x-worker'} // 0) => 1 } @$res;
    my $n = calls();
    cmp_ok $n, '<=', $WORKERS, "at most one whoami call per worker: $n calls, "
        . keys(%workers) . ' workers answered';
    note "cold burst of 200 requests over " . keys(%workers) . " workers: $n whoami calls";
};

# The credential works on every worker (and is in every front cache), then $logout runs,
# then it fails on every worker at once.
sub logged_out_everywhere ($what, $logout, $check, @headers) {
    my $before = on_every_worker('/', @headers);
    is statuses($before), join(' ', (200) x $WORKERS), "$what: let through on every worker before";
    my $r = $logout->();
    $check->($r);
    my $start = time;
    my $after = on_every_worker('/', @headers);
    is scalar(keys %$after), $WORKERS, "$what: all $WORKERS workers answered after";
    is statuses($after), join(' ', (401) x $WORKERS), "$what: 401 on every worker right after";
    cmp_ok time - $start, '<', 5, "$what: no waiting for a TTL";
}

subtest 'browser logout' => sub {
    my $u = user('browser');
    logged_out_everywhere('browser logout', sub {
        $t->get("/.ory/self-service/logout?token=$u->{session_ids}[0]&return_to=/bye", cookie($u));
    }, sub ($r) {
        is $r->{status}, 303, 'Kratos redirected';
        is $r->{headers}{location}, '/bye', 'to return_to';
    }, cookie($u));
    my @lines = $t->log_lines(qr/ory_session: logout answered 303, \d+ cached entries evicted/);
    ok @lines, 'the eviction is logged';
    unlike join('', @lines), qr/\Q$u->{cookies}[0]\E/, 'without the credential';
};

subtest 'API logout' => sub {
    my $u = user('api');
    logged_out_everywhere('API logout', sub {
        $t->request(method => 'DELETE', path => '/.ory/self-service/logout/api',
            headers => ['Content-Type' => 'application/json'],
            body => qq({"session_token": "$u->{tokens}[0]"}));
    }, sub ($r) {
        is $r->{status}, 204, 'Kratos answered 204';
    }, token($u));
    # The same token as a bearer token was evicted too.
    is $t->get('/', Authorization => "Bearer $u->{tokens}[0]")->{status}, 401, 'as a bearer token too';
};

subtest 'DELETE /sessions/{id}: that session' => sub {
    my $u = user('one', sessions => 2);
    is $t->get('/', cookie($u, 0))->{status}, 200, 'the caller\'s own session works';
    logged_out_everywhere('DELETE /sessions/{id}', sub {
        $t->request(method => 'DELETE', path => "/.ory/sessions/$u->{session_ids}[1]", headers => [cookie($u, 0)]);
    }, sub ($r) {
        is $r->{status}, 204, 'Kratos answered 204';
    }, cookie($u, 1));
    my $mine = on_every_worker('/', cookie($u, 0));
    is statuses($mine), join(' ', (200) x $WORKERS), 'the caller\'s own session still works everywhere';
};

subtest 'DELETE /sessions: the identity\'s other sessions' => sub {
    my $u = user('others', sessions => 3);
    is $t->get('/', cookie($u, 0))->{status}, 200, 'the caller is cached';
    is $t->get('/', cookie($u, 2))->{status}, 200, 'the third session works';
    logged_out_everywhere('DELETE /sessions', sub {
        $t->request(method => 'DELETE', path => '/.ory/sessions', headers => [cookie($u, 0)]);
    }, sub ($r) {
        is $r->{status}, 200, 'Kratos answered 200';
        is $r->{json}{count}, 2, 'two sessions ended';
    }, cookie($u, 1));
    is statuses(on_every_worker('/', cookie($u, 2))), join(' ', (401) x $WORKERS), 'the third one too';
    is statuses(on_every_worker('/', cookie($u, 0))), join(' ', (200) x $WORKERS),
        'the caller\'s own session still works everywhere';
};

subtest 'a failed logout evicts nothing' => sub {
    my $u = user('failed');
    on_every_worker('/', cookie($u));
    $t->kratos_reset;
    my $r = $t->get('/.ory/self-service/logout', cookie($u));    # no logout token
    is $r->{status}, 401, 'Kratos refused the logout';
    is statuses(on_every_worker('/', cookie($u))), join(' ', (200) x $WORKERS), 'still let through';
    is calls(), 0, 'from the cache';
};

subtest 'purge by session id and by identity id' => sub {
    for my $by (qw(session_id identity_id)) {
        my $u = user("purge-$by", sessions => 2);
        my $id = $by eq 'session_id' ? $u->{session_ids}[0] : $u->{identity};
        on_every_worker('/', cookie($u, $_)) for 0, 1;
        # Revoked at Kratos (its admin API), unseen by nginx: the cache still lets it in.
        $t->kratos_revoke({ $by => $id });
        is statuses(on_every_worker('/', cookie($u))), join(' ', (200) x $WORKERS),
            "$by: revoked elsewhere, still cached";
        my $r = $t->request(method => 'DELETE', path => "/purge?$by=$id");
        is $r->{status}, 200, "$by: the purge answers 200";
        is_deeply $r->{json}, { purged => $by eq 'session_id' ? 1 : 2 }, "$by: with the count";
        is statuses(on_every_worker('/', cookie($u))), join(' ', (401) x $WORKERS),
            "$by: 401 on every worker right after";
        my $second = statuses(on_every_worker('/', cookie($u, 1)));
        is $second, join(' ', ($by eq 'session_id' ? 200 : 401) x $WORKERS),
            "$by: the identity's other session " . ($by eq 'session_id' ? 'stays' : 'goes too');
    }
    is $t->get('/purge?session_id=x')->{status}, 405, 'GET: 405';
    is $t->request(method => 'POST', path => '/purge?session_id=x')->{status}, 405, 'POST: 405';
    my $none = $t->request(method => 'DELETE', path => '/purge');
    is $none->{status}, 400, 'no id: 400';
    is $t->request(method => 'DELETE', path => '/purge?session_id=a%22b')->{status}, 400, 'an id that is no id: 400';
    is_deeply $t->request(method => 'DELETE', path => '/purge?session_id=nobody')->{json}, { purged => 0 },
        'an unknown id purges nothing';
};

subtest 'the status page shows the zone' => sub {
    my $text = $t->get('/status')->{body};
    like $text, qr/^ory_cache_zone_entries\{zone="sessions"\} [1-9]\d*$/m, 'entries';
    like $text, qr/^ory_cache_zone_size_bytes\{zone="sessions"\} 10485760$/m, 'size';
    like $text, qr/^ory_cache_zone_entry_bytes\{zone="sessions"\} [1-9]\d*$/m, 'bytes';
    like $text, qr/^ory_cache_zone_revocations_total\{zone="sessions"\} [1-9]\d*$/m, 'revocations';
    like $text, qr/^ory_cache_zone_evictions_total\{zone="sessions"\} 0$/m, 'no evictions in a large zone';
    my ($entries) = $text =~ /^ory_cache_zone_entries\{zone="sessions"\} (\d+)$/m;
    my ($negative) = $text =~ /^ory_cache_zone_negative_entries\{zone="sessions"\} (\d+)$/m;
    my ($bytes) = $text =~ /^ory_cache_zone_entry_bytes\{zone="sessions"\} (\d+)$/m;
    note sprintf 'zone: %d answers and %d refusals in %d bytes', $entries, $negative, $bytes;
};

done_testing;
