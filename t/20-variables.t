# $ory_* variables reach the upstream, stay set across internal redirects, are empty for
# unauthenticated requests, and cannot carry a header injection.
use v5.36;
use Test::More;
use JSON::PP;
use FindBin;
use lib "$FindBin::Bin/lib";
use OryTest;

my $t = OryTest->new->serve(<<'EOF');
    ory_session_kratos_url %%KRATOS_URL%%;

    server {
        listen 127.0.0.1:%%HTTP_PORT%%;

        proxy_set_header X-User-Id     $ory_user_id;
        proxy_set_header X-Session-Id  $ory_session_id;
        proxy_set_header X-Aal         $ory_session_aal;
        proxy_set_header X-Expires-At  $ory_session_expires_at;
        proxy_set_header X-Auth-At     $ory_session_authenticated_at;
        proxy_set_header X-Schema      $ory_identity_schema_id;
        proxy_set_header X-State       $ory_identity_state;
        proxy_set_header X-Traits      $ory_identity_traits;
        proxy_set_header X-Metadata    $ory_identity_metadata_public;
        proxy_set_header X-Email       $ory_trait_email;
        proxy_set_header X-Name        $ory_trait_name;
        proxy_set_header X-Nick        $ory_trait_nick;
        proxy_set_header X-Missing     $ory_trait_missing;
        proxy_set_header X-Cache       $ory_session_cache_status;

        location / {
            ory_session on;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        # try_files ends in an internal redirect to a named location, which clears module
        # contexts in nginx: the decision and the variables must survive it.
        location /redirected/ {
            ory_session on;
            root %%PREFIX%%/html;
            try_files /nonexistent @app;
        }
        location @app {
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        # A refused request can be sent elsewhere: there the variables are empty.
        location /denied/ {
            ory_session on;
            error_page 401 = @login;
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
        location @login {
            proxy_pass http://127.0.0.1:%%BACKEND_PORT%%;
        }
    }
EOF

my $jane = OryTest->fixture_session('jane');
my $JANE_ID = $jane->{session}{identity}{id};

subtest 'every variable reaches the upstream' => sub {
    my $r = $t->get('/app', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{status}, 200, 'allowed';
    my $h = $r->{json}{headers};
    is $h->{'x-user-id'}, $JANE_ID, '$ory_user_id';
    is $h->{'x-session-id'}, $jane->{session}{id}, '$ory_session_id';
    is $h->{'x-aal'}, 'aal2', '$ory_session_aal';
    like $h->{'x-expires-at'}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, '$ory_session_expires_at is RFC 3339';
    like $h->{'x-auth-at'}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/, '$ory_session_authenticated_at';
    is $h->{'x-schema'}, 'default', '$ory_identity_schema_id';
    is $h->{'x-state'}, 'active', '$ory_identity_state';
    is_deeply decode_json($h->{'x-traits'}), $jane->{session}{identity}{traits}, '$ory_identity_traits is the traits JSON';
    is_deeply decode_json($h->{'x-metadata'}), $jane->{session}{identity}{metadata_public},
        '$ory_identity_metadata_public is the metadata JSON';
    is $h->{'x-email'}, 'jane@example.com', '$ory_trait_email';
    is_deeply decode_json($h->{'x-name'}), {first => 'Jane', last => 'Doe'}, 'an object trait is JSON';
    ok !exists $h->{'x-missing'}, 'an unknown trait is empty (and proxy_set_header drops it)';
    is $h->{'x-cache'}, 'MISS', '$ory_session_cache_status';
    is $t->get('/app', Cookie => 'ory_kratos_session=jane-cookie')->{json}{headers}{'x-cache'}, 'HIT',
        'then HIT';
};

subtest 'variables survive an internal redirect' => sub {
    $t->kratos_reset;
    my $r = $t->get('/redirected/x', 'X-Session-Token' => 'ory_st_bob');
    is $r->{status}, 200, 'allowed';
    is $r->{json}{uri}, '/redirected/x', 'served by the named location';
    is $r->{json}{headers}{'x-user-id'}, '6a1f2e3d-4c5b-4a69-8788-99aabbccddee', 'the user id is still set';
    is $t->kratos_calls->{count}, 1, 'the redirect did not ask Kratos again';
};

subtest 'variables are empty when the request is refused' => sub {
    my $r = $t->get('/denied/x', Cookie => 'ory_kratos_session=nobody', 'X-User-Id' => 'forged');
    is $r->{status}, 200, 'error_page sent the refused request on';
    my $h = $r->{json}{headers};
    ok !exists $h->{'x-user-id'}, 'no user id (and the forged one was replaced)';
    ok !exists $h->{'x-traits'}, 'no traits';
};

subtest 'a trait cannot inject a header' => sub {
    $t->kratos_add_sessions({ sessions => [{
        name => 'injector', credentials => ['injector-cookie'],
        session => { identity => { id => 'injector-id', traits => {
            email => "evil\@example.com\r\nX-Injected: 1", nick => "a\nb\rc\x00d",
        } } },
    }] });
    my $r = $t->get('/app', Cookie => 'ory_kratos_session=injector-cookie');
    is $r->{status}, 200, 'allowed';
    my $h = $r->{json}{headers};
    ok !exists $h->{'x-injected'}, 'no injected header reached the upstream';
    is $h->{'x-email'}, 'evil@example.com%0D%0AX-Injected: 1', 'control characters are percent-encoded';
    is $h->{'x-nick'}, 'a%0Ab%0Dc%00d', 'every control character';
    unlike $h->{'x-traits'}, qr/[\r\n]/, 'the traits JSON has no raw line break';
};

$t->stop;
done_testing;
