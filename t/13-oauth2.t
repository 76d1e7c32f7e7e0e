# ory_oauth2: access tokens from Ory Hydra. Every row of the outcome table, key rotation and
# the refetch cooldown, the algorithm-confusion attack, both checks on one location, and the
# variables reaching the upstream. Tokens are minted by the Hydra double with PyJWT.
use v5.36;
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use MIME::Base64 qw(encode_base64url decode_base64url);
use JSON::PP;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $SUB  = '5b4e3a59-3f5e-4b26-9f57-b1ab8c6b1f9a';    # the double's default subject
my $JANE = 'bf32596a-f853-47c4-91e6-a3f41cf4949d';

my $t = OryTest->new;
$t->start_kratos;
$t->start_backend;
my $hydra = $t->start_hydra;
my $failing = $t->start_hydra(name => 'hydra2');
$t->start_keto(tuples => ["documents:readme#viewer\@$SUB"]);
$t->write_config(<<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;
    ory_permission_url %%KETO_URL%%;
    ory_oauth2_jwks_url %%HYDRA_URL%%/.well-known/jwks.json;
    ory_oauth2_introspection_url %%HYDRA_URL%%/admin/oauth2/introspect;
    ory_oauth2_introspection_header X-Api-Key double-api-key;
    ory_oauth2_issuer %%HYDRA_URL%%;
    ory_oauth2_timeout 1s;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;
        # Room for a header over 8 KiB, so that the module, not nginx, refuses the token.
        large_client_header_buffers 4 32k;
        add_header X-OAuth2-Cache $ory_oauth2_cache_status always;

        location /api/ {
            ory_oauth2 on;
            proxy_set_header X-Sub $ory_oauth2_subject;
            proxy_set_header X-Client $ory_oauth2_client_id;
            proxy_set_header X-Scope $ory_oauth2_scope;
            proxy_set_header X-Expires $ory_oauth2_expires_at;
            proxy_set_header X-Ext $ory_oauth2_claim_ext;
            proxy_set_header X-Jti $ory_oauth2_claim_jti;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /scoped/ {
            ory_oauth2 on;
            ory_oauth2_scope read write;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /audience/ {
            ory_oauth2 on;
            ory_oauth2_audience other.example.com;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /issuer/ {
            ory_oauth2 on;
            ory_oauth2_issuer https://elsewhere.example.com;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /both/ {
            ory_session on;
            ory_oauth2 on;
            proxy_set_header X-User-Id $ory_user_id;
            proxy_set_header X-Sub $ory_oauth2_subject;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /permission/ {
            ory_oauth2 on;
            ory_permission documents readme viewer;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /uncached/ {
            ory_oauth2 on;
            ory_oauth2_cache_ttl 0;
            ory_oauth2_cache_negative_ttl 0;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /failing/ {
            ory_oauth2 on;
            ory_oauth2_jwks_url http://127.0.0.1:%%PORT_hydra2%%/.well-known/jwks.json;
            ory_oauth2_introspection_url http://127.0.0.1:%%PORT_hydra2%%/admin/oauth2/introspect;
            ory_oauth2_issuer http://127.0.0.1:%%PORT_hydra2%%;
            ory_oauth2_cache_ttl 0;
            ory_oauth2_cache_negative_ttl 0;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location /refused/ {
            ory_oauth2 on;
            ory_oauth2_introspection_url http://127.0.0.1:%%PORT_dead%%/admin/oauth2/introspect;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location = /status {
            ory_session_status;
        }
    }
EOF
$t->start_nginx;
$t->wait_for(sub { $t->hydra_calls->{counts}{jwks} >= 1 }, what => 'the worker fetched the JWKS');

# One request with fresh counters; returns (response, Hydra's counts, new log lines).
sub check ($path, @headers) {
    $t->hydra_reset;
    my $before = () = $t->log_lines(qr/ory_oauth2: /);
    my $r = $t->get($path, @headers);
    my @lines = $t->log_lines(qr/ory_oauth2: /);
    return ($r, $t->hydra_calls->{counts}, [@lines[$before .. $#lines]]);
}

sub bearer ($token) { (Authorization => "Bearer $token") }
# A base64url part with its sixth character changed.
sub flipped ($part) { substr($part, 5, 1, substr($part, 5, 1) eq 'A' ? 'B' : 'A'); $part }

# Reloads and waits until the old workers are gone, so that only new ones answer.
sub fresh_workers () { $t->reload(old_gone => 1) }

my $now = time;

subtest 'a valid JWT: the request goes on, the claims reach the upstream' => sub {
    my $token = $t->jwt(claims => { scp => ['read', 'write'], ext => { tenant => 'acme' } });
    my ($r, $calls, $log) = check('/api/x', bearer($token));
    is $r->{status}, 200, 'answered 200';
    my $h = $r->{json}{headers};
    is $h->{'x-sub'}, $SUB, '$ory_oauth2_subject';
    is $h->{'x-client'}, 'double-client', '$ory_oauth2_client_id';
    is $h->{'x-scope'}, 'read write', '$ory_oauth2_scope';
    like $h->{'x-expires'} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, '$ory_oauth2_expires_at, RFC 3339';
    is_deeply decode_json($h->{'x-ext'} // '{}'), { tenant => 'acme' }, '$ory_oauth2_claim_ext as JSON';
    like $h->{'x-jti'} // '', qr/^[0-9a-f-]{36}$/, '$ory_oauth2_claim_jti';
    is $calls->{jwks} + $calls->{introspect}, 0, 'verified with the keys fetched at start, no call';
    is $r->{headers}{'x-oauth2-cache'}, 'MISS', 'a first-seen token is a miss';
    is scalar @$log, 0, 'nothing logged';
    my $jti = $h->{'x-jti'};
    ($r) = check('/api/x', bearer($token));
    is $r->{status}, 200, 'again: 200';
    is $r->{headers}{'x-oauth2-cache'}, 'HIT', 'from the cache';
    $h = $r->{json}{headers};
    is_deeply decode_json($h->{'x-ext'} // '{}'), { tenant => 'acme' }, 'the cached claims: $ory_oauth2_claim_ext';
    is $h->{'x-jti'}, $jti, 'the cached claims: $ory_oauth2_claim_jti';
    is $h->{'x-sub'}, $SUB, 'the cached claims: $ory_oauth2_subject';
};

subtest 'every algorithm Hydra can sign with' => sub {
    for my $alg (qw(RS256 PS256 ES256 EdDSA)) {
        my ($r) = check('/api/x', bearer($t->jwt(alg => $alg)));
        is $r->{status}, 200, "$alg: 200";
    }
};

subtest 'no token: 401 with a bare challenge' => sub {
    my ($r, $calls, $log) = check('/api/x');
    is $r->{status}, 401, 'answered 401';
    is $r->{headers}{'www-authenticate'}, 'Bearer', 'WWW-Authenticate: Bearer, no error code';
    like $log->[0] // '', qr/\[info\] .*ory_oauth2: no bearer token in the request while checking OAuth2 token/,
        'logged at info';
    ($r) = check('/api/x', Authorization => 'Basic dXNlcjpwdw==');
    is $r->{status}, 401, 'another scheme is no token';
    # The module reads nginx's one Authorization header: a second one behind a Basic first
    # cannot smuggle a token in, nginx refuses the request before any check.
    ($r, $calls) = check('/api/x', Authorization => 'Basic dXNlcjpwdw==', bearer($t->jwt));
    is $r->{status}, 400, 'two Authorization headers: 400 from nginx';
    is $calls->{jwks} + $calls->{introspect}, 0, 'two Authorization headers: no call';
};

subtest 'invalid tokens: 401 invalid_token' => sub {
    my $good = $t->jwt;
    my ($h, $p, $s) = split /\./, $good;
    my $other = $t->jwt(claims => { sub => 'someone-else' });
    my (undef, $p2) = split /\./, $other;
    my @cases = (
        ['a bad signature',            "$h.$p." . flipped($s),                 qr/signature/],
        ['a swapped payload',          "$h.$p2.$s",                            qr/signature/],
        ['alg none',                   $t->forged_token(kind => 'none'),       qr/algorithm|alg/],
        ['HS256 with the public key',  $t->forged_token(kind => 'hs256-public-key'), qr/algorithm|alg/],
        ['expired',                    $t->jwt(claims => { exp => int($now) - 3600, iat => int($now) - 7200, nbf => int($now) - 7200 }), qr/expired/],
        ['not yet valid',              $t->jwt(claims => { nbf => int($now) + 3600 }), qr/not valid yet|not yet/],
        ['issued in the future',       $t->jwt(claims => { iat => int($now) + 3600 }), qr/future|iat/],
        ['no exp',                     $t->jwt(claims => { exp => undef }),    qr/no exp/],
        ['not an access token',        $t->jwt(claims => { client_id => undef }), qr/client_id/],
        ['three parts of garbage',     'aaaa.bbbb.cccc',                       qr/./],
    );
    for my $case (@cases) {
        my ($name, $token, $reason) = @$case;
        my ($r, $calls, $log) = check('/api/x', bearer($token));
        is $r->{status}, 401, "$name: 401";
        is $r->{headers}{'www-authenticate'}, 'Bearer error="invalid_token"', "$name: invalid_token";
        like $log->[0] // '', qr/\[info\] .*ory_oauth2: .* while checking OAuth2 token/, "$name: logged at info";
        like $log->[0] // '', $reason, "$name: the reason";
        unlike $log->[0] // '', qr/\Q$token\E/, "$name: the token is not logged";
    }
    my ($r) = check('/api/x', bearer($t->jwt(claims => { exp => int($now) - 10 })));
    is $r->{status}, 200, 'expired 10 s ago: within the leeway';
    ($r) = check('/issuer/x', bearer($t->jwt));
    is $r->{status}, 401, 'another issuer: 401';
    ($r) = check('/audience/x', bearer($t->jwt));
    is $r->{status}, 401, 'no accepted audience: 401';
    ($r) = check('/audience/x', bearer($t->jwt(claims => { aud => ['api.example.com', 'other.example.com'] })));
    is $r->{status}, 200, 'an accepted audience among others: 200';
};

subtest 'tokens that cannot be tokens: 401 without any call' => sub {
    for my $case (
        ['a Kratos session token', 'Bearer ory_st_jane'],
        ['empty',          'Bearer '],
        ['over 8 KiB',     'Bearer ' . ('a' x 8193)],
        ['two parts',      'Bearer abc def'],
        ['a quote',        'Bearer abc"def'],
        ['a control byte', "Bearer abc\x01def"],
    ) {
        my ($name, $value) = @$case;
        my ($r, $calls) = check('/api/x', Authorization => $value);
        is $r->{status}, 401, "$name: 401";
        is $calls->{jwks} + $calls->{introspect}, 0, "$name: no call";
    }
};

subtest 'a missing scope: 403 insufficient_scope' => sub {
    my ($r, $calls, $log) = check('/scoped/x', bearer($t->jwt(claims => { scp => ['read'] })));
    is $r->{status}, 403, 'answered 403';
    is $r->{headers}{'www-authenticate'}, 'Bearer error="insufficient_scope", scope="read write"',
        'the challenge names the scopes needed';
    like $log->[0] // '', qr/\[info\] .*lacks the scope "write"/, 'logged at info with the scope missing';
    ($r) = check('/scoped/x', bearer($t->jwt(claims => { scp => ['write', 'read', 'other'] })));
    is $r->{status}, 200, 'every scope granted: 200';
    ($r) = check('/scoped/x', bearer($t->jwt(claims => { scp => undef, scope => 'read write' })));
    is $r->{status}, 200, 'scope as a string, as Hydra can write it: 200';
    my $token = $t->jwt(claims => { scp => ['read'] });
    check('/scoped/x', bearer($token));
    ($r) = check('/api/x', bearer($token));
    is $r->{status}, 200, 'the same token where no scope is needed: 200 (the cache keeps the rules apart)';
};

subtest 'opaque tokens are introspected' => sub {
    my $token = $t->opaque_token(claims => { scope => 'read write', ext => { tenant => 'acme' } });
    like $token, qr/^ory_at_/, 'Hydra\'s opaque format';
    my ($r, $calls, $log) = check('/api/x', bearer($token));
    is $r->{status}, 200, 'active: 200';
    is $calls->{introspect}, 1, 'one introspection';
    my $req = $t->hydra_calls;    # after check's reset: this request's only
    is $r->{json}{headers}{'x-sub'}, $SUB, 'the subject reaches the upstream';
    is $r->{json}{headers}{'x-scope'}, 'read write', 'the scopes reach the upstream';
    is_deeply decode_json($r->{json}{headers}{'x-ext'} // '{}'), { tenant => 'acme' }, 'ext as an object';
    ($r, $calls) = check('/api/x', bearer($token));
    is $calls->{introspect}, 0, 'cached';
    is $r->{headers}{'x-oauth2-cache'}, 'HIT', 'cache status HIT';

    $t->hydra_reset;
    my $fresh = $t->opaque_token;
    $t->get('/api/x', bearer($fresh));
    my $seen = $t->hydra_calls->{requests}[0];
    is $seen->{headers}{'x-api-key'}, 'double-api-key', 'ory_oauth2_introspection_header reaches Hydra';
    like $seen->{headers}{'content-type'} // '', qr{^application/x-www-form-urlencoded}, 'a form';
    is $seen->{form}{token}[0] // $seen->{form}{token}, $fresh, 'the token, and only in the form';

    ($r, $calls, $log) = check('/api/x', bearer('ory_at_unknown.token'));
    is $r->{status}, 401, 'unknown to Hydra: 401';
    is $r->{headers}{'www-authenticate'}, 'Bearer error="invalid_token"', 'invalid_token';
    like $log->[0] // '', qr/not active/, 'logged: not active';
    ($r, $calls) = check('/api/x', bearer('ory_at_unknown.token'));
    is $calls->{introspect}, 0, 'an inactive answer is cached too';
    ($r) = check('/api/x', bearer($t->opaque_token(token_use => 'refresh_token')));
    is $r->{status}, 401, 'a refresh token: 401';
    ($r) = check('/api/x', bearer($t->opaque_token(active => JSON::PP::false)));
    is $r->{status}, 401, 'revoked: 401';
    ($r) = check('/scoped/x', bearer($t->opaque_token(claims => { scope => 'read' })));
    is $r->{status}, 403, 'an introspected token without a required scope: 403';
};

subtest 'key rotation without a reload, and the refetch cooldown' => sub {
    $t->hydra_reset;
    my $kid = $t->hydra_rotate({ alg => 'RS256' })->{kid};
    my $token = $t->jwt(alg => 'RS256', kid => $kid);
    my ($r, $calls) = check('/api/x', bearer($token));
    is $r->{status}, 200, 'a token signed with the new key: 200';
    is $calls->{jwks}, 1, 'the unknown kid made one refetch';
    my ($h, $p, $s) = split /\./, $t->jwt;
    my $header = decode_json(decode_base64url($h));
    $header->{kid} = 'forged-0';
    my $forged = encode_base64url(encode_json($header)) . ".$p.$s";
    sleep 10.5;    # past the cooldown of the refetch above
    ($r, $calls) = check('/api/x', bearer($forged));
    is $r->{status}, 401, 'a kid that is not in the JWKS: 401 after a refetch';
    is $calls->{jwks}, 1, 'one refetch';
    sleep 10.5;    # the flood starts after the cooldown: it may cost exactly one fetch
    $t->hydra_reset;
    my @tokens = map {
        $header->{kid} = "forged-$_";
        encode_base64url(encode_json($header)) . ".$p.$s";
    } 1 .. 1000;
    my $refused = 0;
    for my $batch (0 .. 9) {
        my $rs = $t->parallel_get([ map { ['/api/x', bearer($_)] } @tokens[$batch * 100 .. $batch * 100 + 99] ]);
        $refused += grep { $_->{status} == 401 } @$rs;
    }
    is $refused, 1000, '1000 forged kids: all 401';
    my $fetches = $t->hydra_calls->{counts}{jwks};
    is $fetches, 1, '1000 forged kids: one JWKS fetch (the first), then the cooldown';
    note "JWKS fetches under 1000 forged kids: $fetches";
};

subtest 'Hydra failures fail closed' => sub {
    for my $case (
        [500        => { mode => 'status', status => 500 }, 502, qr/\[error\] .*Hydra answered 500 while checking OAuth2 token/],
        [429        => { mode => 'status', status => 429 }, 503, qr/rate-limited/],
        [close      => { mode => 'close' },                 502, qr/Hydra is unreachable/],
        [reset      => { mode => 'reset' },                 502, qr/Hydra is unreachable/],
        [garbage    => { mode => 'garbage' },               502, qr/malformed/],
        [oversize   => { mode => 'oversize' },              502, qr/larger than 1048576 bytes/],
        [wrong_type => { mode => 'wrong_type' },            502, qr/content type/],
        [slow       => { mode => 'normal', delay_ms => 1500 }, 504, qr/did not answer within ory_oauth2_timeout/],
    ) {
        my ($name, $behaviour, $status, $reason) = @$case;
        $t->hydra_reset;
        $t->hydra_behaviour({ endpoint => 'introspect', %$behaviour });
        my $before = () = $t->log_lines(qr/ory_oauth2: /);
        my $r = $t->get('/uncached/x', bearer($t->opaque_token));
        my @lines = $t->log_lines(qr/ory_oauth2: /);
        is $r->{status}, $status, "introspection $name: $status";
        like join("\n", @lines[$before .. $#lines]), $reason, "introspection $name: the reason";
    }
    my ($r, undef, $log) = check('/refused/x', bearer($t->opaque_token));
    is $r->{status}, 502, 'introspection refused: 502';
    like join("\n", @$log), qr/Hydra is unreachable \(connection refused\)/, 'introspection refused: the reason';
    $t->hydra_reset;
    for my $case (
        [500     => { mode => 'status', status => 500 }, 502],
        [429     => { mode => 'status', status => 429 }, 503],
        [garbage => { mode => 'garbage' },               502],
        [oversize => { mode => 'oversize' },             502],
        [close   => { mode => 'close' },                 502],
    ) {
        my ($name, $behaviour, $status) = @$case;
        $t->hydra_behaviour({ endpoint => 'jwks', %$behaviour }, 'hydra2');
        my $failed = () = $t->log_lines(qr/ory_oauth2: the JWKS endpoint .* while fetching keys/);
        fresh_workers();    # they fetch the failing JWKS when they start
        ok $t->wait_for(sub { $t->log_lines(qr/ory_oauth2: the JWKS endpoint .* while fetching keys/) > $failed }),
            "JWKS $name: the fetch failed and said so";
        my $r = $t->get('/failing/x', bearer($t->jwt(name => 'hydra2')));
        is $r->{status}, $status, "JWKS $name: $status";
        $t->_stub(POST => '/__double/reset', {}, 'hydra2');
    }
    $t->allow_log(qr/while fetching keys/);
};

subtest 'a session or a token on one location' => sub {
    $t->hydra_reset;
    $t->kratos_reset;
    my ($r) = check('/both/x', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{status}, 200, 'a session cookie: 200';
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'the session\'s identity';
    ($r) = check('/both/x', bearer($t->jwt));
    is $r->{status}, 200, 'an access token: 200';
    is $r->{json}{headers}{'x-sub'}, $SUB, 'the token\'s subject';
    is $t->kratos_calls->{count}, 1, 'Kratos was asked only for the cookie';
    $t->kratos_reset;
    my $calls;
    ($r, $calls) = check('/both/x', bearer('ory_st_jane'));
    is $r->{status}, 200, 'a Kratos session token as a bearer token: 200';
    is $r->{json}{headers}{'x-user-id'}, $JANE, 'checked by Kratos';
    is $t->kratos_calls->{count}, 1, 'Kratos asked';
    is $calls->{introspect}, 0, 'Hydra not asked';
    my $log;
    ($r, $calls, $log) = check('/both/x');
    is $r->{status}, 401, 'neither: 401';
    my @lines = $t->log_lines(qr/no session credential and no bearer token/);
    ok scalar @lines, 'one line says neither was found';
    ($r) = check('/both/x', bearer($t->jwt(claims => { exp => int($now) - 3600 })));
    is $r->{status}, 401, 'an expired token and no session: 401';
    is $r->{headers}{'www-authenticate'}, 'Bearer error="invalid_token"', 'the token\'s answer';
    ($r) = check('/both/x', Cookie => 'ory_kratos_session=jane-cookie', bearer($t->jwt(claims => { exp => int($now) - 3600 })));
    is $r->{status}, 200, 'a good session with a bad token: 200 (either passes)';
};

subtest 'the token\'s subject is the permission\'s subject' => sub {
    my ($r) = check('/permission/x', bearer($t->jwt));
    is $r->{status}, 200, 'the token\'s sub may view: 200';
    ($r) = check('/permission/x', bearer($t->jwt(claims => { sub => 'someone-else' })));
    is $r->{status}, 403, 'another sub: 403';
};

subtest 'concurrent introspections of one token share a call' => sub {
    $t->hydra_reset;
    $t->hydra_behaviour({ endpoint => 'introspect', mode => 'normal', delay_ms => 500 });
    my $token = $t->opaque_token;
    my $rs = $t->parallel_get([ map { ['/uncached/x', bearer($token)] } 1 .. 100 ], timeout => 20);
    is scalar(grep { $_->{status} == 200 } @$rs), 100, 'all 200';
    is $t->hydra_calls->{counts}{introspect}, 1, 'one introspection';
    $t->hydra_reset;
};

subtest 'parked token checks: aborts, timeouts, a reload' => sub {
    $t->hydra_reset;
    $t->hydra_behaviour({ endpoint => 'introspect', mode => 'normal', delay_ms => 700 });
    my $token = $t->opaque_token;
    $t->abort_get('/uncached/x', bearer($token), after_ms => 0) for 1 .. 20;
    $t->abort_get('/uncached/x', bearer($token), rst => 1) for 1 .. 20;
    sleep 1;
    $t->hydra_reset;
    is $t->get('/uncached/x', bearer($t->opaque_token))->{status}, 200, 'after 40 aborted parked requests the worker serves';
    is scalar($t->worker_pids), 1, 'the same worker runs';

    $t->hydra_behaviour({ endpoint => 'introspect', mode => 'normal', delay_ms => 1500 });
    my $start = time;
    is $t->get('/uncached/x', bearer($t->opaque_token))->{status}, 504, 'a parked introspection times out: 504';
    cmp_ok time - $start, '<', 1.4, 'within ory_oauth2_timeout';

    $t->hydra_behaviour({ endpoint => 'introspect', mode => 'normal', delay_ms => 600 });
    $token = $t->opaque_token;
    my $pid = fork // die;
    if (!$pid) {
        my $rs = $t->parallel_get([ map { ['/uncached/x', bearer($token)] } 1 .. 20 ], timeout => 20);
        POSIX::_exit((grep { $_->{status} == 200 } @$rs) == 20 ? 0 : 1);
    }
    sleep 0.2;
    $t->reload;
    waitpid $pid, 0;
    is $? >> 8, 0, 'introspections parked across a reload all answer 200';

    # Requests that wait for the first fetch of a key set.
    $t->_stub(POST => '/__double/behaviour', { endpoint => 'jwks', mode => 'normal', delay_ms => 600 }, 'hydra2');
    fresh_workers();
    sleep 0.1;
    my $rs = $t->parallel_get([ map { ['/failing/x', bearer($t->jwt(name => 'hydra2'))] } 1 .. 10 ], timeout => 10);
    is scalar(grep { $_->{status} == 200 } @$rs), 10, 'requests that waited for the keys: all 200';

    # A JWKS that never answers: requests waiting for the first keys end with 504.
    $t->_stub(POST => '/__double/behaviour', { endpoint => 'jwks', mode => 'stall' }, 'hydra2');
    fresh_workers();
    $start = time;
    is $t->get('/failing/x', bearer($t->jwt(name => 'hydra2')))->{status}, 504,
        'waiting for keys that do not come: 504';
    cmp_ok time - $start, '<', 1.4, 'within ory_oauth2_timeout';
    $t->_stub(POST => '/__double/reset', {}, 'hydra2');
    $t->hydra_reset;
};

subtest 'the status endpoint counts token checks' => sub {
    my $text = $t->get('/status')->{body};
    like $text, qr/^ory_oauth2_decisions_total\{outcome="allowed"\} [1-9]\d*$/m, 'allowed';
    like $text, qr/^ory_oauth2_decisions_total\{outcome="unauthenticated"\} [1-9]\d*$/m, 'unauthenticated';
    like $text, qr/^ory_oauth2_decisions_total\{outcome="forbidden"\} [1-9]\d*$/m, 'forbidden';
    like $text, qr/^ory_oauth2_cache_hits_total [1-9]\d*$/m, 'cache hits';
    like $text, qr/^ory_oauth2_introspection_calls_total [1-9]\d*$/m, 'introspections';
    like $text, qr/^ory_oauth2_introspection_in_flight 0$/m, 'none in flight';

    # Every signature checked is counted with its time; a cache hit and a token refused
    # before its signature (alg none) check none.
    my $signatures = sub {
        my $text = $t->get('/status')->{body};
        my ($n) = $text =~ /^ory_oauth2_jwt_signature_checks_total (\d+)$/m;
        my ($s) = $text =~ /^ory_oauth2_jwt_signature_seconds_total ([0-9.e+-]+)$/m;
        ($n, $s);
    };
    my ($n0, $s0) = $signatures->();
    ok defined $n0 && defined $s0, 'the signature series are there';
    my $jwt = $t->jwt(claims => { sub => 'signature-count' });
    is $t->get('/uncached/x', bearer($jwt))->{status}, 200, 'a JWT verified' for 1 .. 3;
    # A token of its own: the uncached location's verifications fill the cache too.
    my $cached = $t->jwt(claims => { sub => 'signature-count-cached' });
    is $t->get('/api/x', bearer($cached))->{headers}{'x-oauth2-cache'}, $_, "a JWT: cache $_"
        for qw(MISS HIT);
    my ($h, $p, $s) = split /\./, $jwt;
    is $t->get('/uncached/x', bearer("$h.$p." . flipped($s)))->{status}, 401, 'a bad signature';
    is $t->get('/uncached/x', bearer($t->forged_token(kind => 'none')))->{status}, 401, 'alg none';
    my ($n1, $s1) = $signatures->();
    is $n1 - $n0, 5, 'five signatures checked: three uncached, one cached, one bad';
    cmp_ok $s1, '>', $s0, 'their time is counted';
};

subtest 'a published key that is not a valid public key is skipped, not tried' => sub {
    # An EC point off its curve is refused when the worker reads the JWKS: the kid is then
    # known as unusable, so its tokens are refused without a signature check or a refetch.
    my $kid = $t->hydra_rotate({ alg => 'ES256', off_curve => 1 })->{kid};
    my @tokens = map { $t->jwt(alg => 'ES256', kid => $kid, claims => { sub => "off-curve-$_" }) } 1 .. 2;
    my $checks = sub { ($t->get('/status')->{body} =~ /^ory_oauth2_jwt_signature_checks_total (\d+)$/m)[0] };
    my $checked = $checks->();
    my ($r, $calls, $log) = check('/api/x', bearer($tokens[0]));
    is $r->{status}, 401, 'a token of that key: 401';
    is $r->{headers}{'www-authenticate'}, 'Bearer error="invalid_token"', 'invalid_token';
    is $calls->{jwks}, 1, 'its unknown kid made one refetch';
    my $text = join "\n", @$log;
    like $text, qr/1 keys of the JWKS cannot verify tokens and are skipped/, 'the skipped key is logged';
    like $text, qr/in the JWKS but not usable/, 'the reason: the key is not usable';
    ($r, $calls) = check('/api/x', bearer($tokens[1]));
    is $r->{status}, 401, 'another token of that key: 401';
    is $calls->{jwks}, 0, 'no refetch: the kid is known as unusable';
    is $checks->(), $checked, 'no signature was checked';
    # A good ES256 key in its place, for whatever comes next.
    $t->hydra_rotate({ alg => 'ES256', drop_old => 1 });
    $t->hydra_reset;
};

subtest 'configuration errors' => sub {
    my $c = OryTest->new;
    my $server = sub ($location) {
        "server {\n listen 127.0.0.1:%%HTTP_PORT%%;\n location / {\n$location\n }\n}\n";
    };
    for my $case (
        ['ory_oauth2 on without an endpoint', $server->('ory_oauth2 on;'),
            qr/neither "ory_oauth2_jwks_url" nor "ory_oauth2_introspection_url" is defined for the "ory_oauth2" directive in \S+nginx\.conf:\d+/],
        ['a URL without a scheme', $server->('ory_oauth2_jwks_url hydra:4444/.well-known/jwks.json;'),
            qr/invalid value "hydra:4444\/.well-known\/jwks.json" in "ory_oauth2_jwks_url" directive, the scheme is missing in \S+nginx\.conf:\d+/],
        ['an ftp URL', $server->('ory_oauth2_introspection_url ftp://hydra/;'),
            qr/invalid value "ftp:\/\/hydra\/" in "ory_oauth2_introspection_url" directive, the scheme must be http or https/],
        ['a scope with a quote', $server->('ory_oauth2_scope read "wr\\"ite";'),
            qr/invalid value "wr"ite" in "ory_oauth2_scope" directive/],
        ['a scope with a space', $server->('ory_oauth2_scope "read write";'),
            qr/invalid value "read write" in "ory_oauth2_scope" directive/],
        ['a leeway over 5 minutes', $server->('ory_oauth2_leeway 10m;'),
            qr/"ory_oauth2_leeway" directive must not be more than 300s/],
        ['a JWKS TTL under 30 s', $server->('ory_oauth2_jwks_cache_ttl 5s;'),
            qr/"ory_oauth2_jwks_cache_ttl" directive must be from 30s to 24h/],
        ['a framing header', $server->('ory_oauth2_introspection_header Content-Length 5;'),
            qr/invalid value "Content-Length" in "ory_oauth2_introspection_header" directive/],
        ['a bad flag', $server->('ory_oauth2 yes;'),
            qr/invalid value "yes" in "ory_oauth2" directive, it must be "on" or "off"/],
    ) {
        my ($name, $http, $expect) = @$case;
        $c->write_config($http);
        my ($code, $out) = $c->nginx_test;
        isnt $code, 0, "$name: nginx -t fails";
        like $out, $expect, "$name: the message says what and where";
    }
};

done_testing;
