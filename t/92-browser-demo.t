# The demo, as a person uses it: scripts/demo starts nginx.conf.example and the Kratos double
# on free ports, and headless Chromium (Debian's chromium and chromium-driver, driven by
# python3-selenium) clicks through it: the application sends it to the login page, Jane logs in
# and is back on the page she asked for, which greets her; the session cookie is HttpOnly; a
# screenshot of that page is kept in target/test-artifacts/; logging out leads to the login page
# again. Before that: a port that is taken stops the demo with a message naming it, and nothing
# is left running; and the demo's login and logout refuse what a demo must not teach (open
# redirects, a logout link from another site).
use v5.36;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Path qw(make_path);
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use OryTest qw(give_up);

my $TOP = $OryTest::TOP;
my $PYTHON = '/usr/bin/python3';    # Debian's, which has python3-selenium (pyenv's has not)
my $CHROMIUM = '/usr/bin/chromium';
my $CHROMEDRIVER = '/usr/bin/chromedriver';
my $ARTIFACTS = "$TOP/target/test-artifacts";
my $SHOT = "$ARTIFACTS/demo-logged-in.png";    # and demo-login.png, the login page
my $CHROME_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,'
    . 'image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';

for ([$CHROMIUM, 'chromium'], [$CHROMEDRIVER, 'chromium-driver'], [$PYTHON, 'python3']) {
    -x $_->[0] or give_up("$_->[0] is missing: scripts/deps --browser installs $_->[1]");
}
my ($code, $out) = OryTest::run($PYTHON, '-c', 'import selenium');
$code == 0 or give_up("$PYTHON cannot import selenium: scripts/deps --browser installs python3-selenium\n$out");

my $t = OryTest->new;

# scripts/demo with its own ports and directory, so that neither a demo someone runs nor port
# 8080 matters. Returns (exit code, output).
sub demo ($env, @args) {
    local @ENV{ keys %$env } = values %$env;
    return OryTest::run("$TOP/scripts/demo", @args);
}

# The processes whose command line names $dir: what a demo in $dir started (nginx is started
# as $dir/nginx, the double with --pid-file $dir/logs/...).
sub processes_of ($dir) {
    my @found;
    for my $proc (glob '/proc/[0-9]*') {
        open my $fh, '<', "$proc/cmdline" or next;
        my $cmd = do { local $/; <$fh> } // next;
        next if ($proc =~ s{/proc/}{}r) == $$;
        push @found, ($proc =~ s{/proc/}{}r) . ': ' . ($cmd =~ tr/\0/ /r) if index($cmd, $dir) >= 0;
    }
    return @found;
}

sub listening ($port) { IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1) }

my %demo = (
    DEMO_PORT => $t->port('demo'), DEMO_KRATOS_PORT => $t->port('demo_kratos'),
    DEMO_APP_PORT => $t->port('demo_app'), DEMO_PREFIX => $t->prefix . '/demo',
);
my $url = "http://127.0.0.1:$demo{DEMO_PORT}/";
my $demo_started;
END { demo(\%demo, 'stop') if $demo_started }

subtest 'a port that is taken: the demo says which, and leaves nothing running' => sub {
    for my $name (qw(DEMO_PORT DEMO_KRATOS_PORT DEMO_APP_PORT)) {
        my %env = (%demo, DEMO_PREFIX => $t->prefix . "/taken-$name");
        my $busy = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $env{$name}, Listen => 5)
            or die "cannot listen on $env{$name}: $@";
        my ($code, $out) = demo(\%env);
        isnt $code, 0, "$name taken: the demo fails";
        like $out, qr/port $env{$name} on 127\.0\.0\.1 is taken by \S+ \(pid $$\): choose another one with $name=PORT/,
            "$name taken: it names the port, who holds it and the variable";
        like $out, qr/nothing was started/, "$name taken: and says nothing was started";
        unlike $out, qr/bind\(\)|listening/, "$name taken: no bind() error, no claim to be listening";
        close $busy;
        is_deeply [processes_of($env{DEMO_PREFIX})], [], "$name taken: no process of that demo runs";
        ok !listening($env{$_}), "$name taken: nothing listens on $_" for grep { $_ ne $name } qw(DEMO_PORT DEMO_KRATOS_PORT DEMO_APP_PORT);
    }
};

($code, $out) = demo(\%demo);
$demo_started = 1;
is $code, 0, 'scripts/demo starts' or give_up("scripts/demo failed:\n$out");
like $out, qr/Open in a browser:\s+\Q$url\E\n/, 'it prints the URL to open';
like $out, qr/^  $_->[0] +$_->[1] +$_->[0]\@example\.com +aal\d, cookie ory_kratos_session=$_->[0]-cookie$/m,
    "it lists $_->[1]" for [jane => 'Jane Doe'], [bob => 'Bob Smith'], [alice => 'Alice Martin'];

subtest 'the demo over HTTP: what a browser cannot show' => sub {
    my $port = $demo{DEMO_PORT};
    my $get = sub ($path, @headers) {
        $t->request(path => $path, headers => [Host => "127.0.0.1:$port", @headers], port => $port);
    };
    my $r = $get->('/orders?id=7', Accept => $CHROME_ACCEPT);
    is $r->{status}, 303, 'a browser without a session: 303';
    is $r->{headers}{location}, "${url}self-service/login/browser?return_to=http%3A%2F%2F127.0.0.1%3A$port%2Forders%3Fid%3D7",
        'to the login page on the same origin, with return_to';
    is $get->('/orders', Accept => 'application/json')->{status}, 401, 'an API client: 401';
    $r = $get->('/', Cookie => 'ory_kratos_session=jane-cookie; theme=dark');
    is $r->{status}, 200, 'with Jane\'s cookie: 200';
    like $r->{body}, qr{<h1 id="hello">hello Jane</h1>}, 'hello Jane';
    is $get->('/public/x')->{status}, 200, '/public/ needs no session';
    is $get->('/__stub/calls')->{status}, 401, "the double's control API is not reachable through nginx";

    for my $case (
        ['another site'          => 'https%3A%2F%2Fevil.example%2F'],
        ['a scheme-relative URL' => '%2F%2Fevil.example%2F'],
        ['user information'      => "http%3A%2F%2F127.0.0.1%3A$port%40evil.example%2F"],
        ['a backslash'           => '%2F%5Cevil.example'],
        ['javascript:'           => 'javascript%3Aalert(1)'],
    ) {
        my ($name, $return_to) = @$case;
        $r = $get->("/self-service/login/browser?return_to=$return_to");
        is $r->{status}, 400, "login page, return_to to $name: 400";
        $r = $t->request(method => 'POST', path => '/self-service/login/browser', port => $port,
            headers => [Host => "127.0.0.1:$port", 'Content-Type' => 'application/x-www-form-urlencoded'],
            body => "identity=jane&return_to=$return_to");
        is $r->{status}, 400, "login form, return_to to $name: 400";
        ok !exists $r->{headers}{'set-cookie'}, "login form, return_to to $name: no cookie";
    }

    $r = $t->request(method => 'POST', path => '/self-service/login/browser', port => $port,
        headers => [Host => "127.0.0.1:$port", 'Content-Type' => 'application/x-www-form-urlencoded'],
        body => 'identity=mallory&return_to=%2F');
    is $r->{status}, 400, 'an identity the login page does not list: 400';

    $r = $get->('/self-service/logout/browser', Cookie => 'ory_kratos_session=jane-cookie');
    my $token = OryTest->fixture_session('jane')->{session}{id};
    is $r->{status}, 200, 'GET /self-service/logout/browser with a session: 200';
    is $r->{json}{logout_url}, "http://127.0.0.1:$port/self-service/logout?token=$token",
        'its logout_url is on this origin, with the session\'s logout token';
    is $get->('/self-service/logout/browser')->{status}, 401, 'and without a session: 401';
    $r = $get->('/self-service/logout?token=not-the-token', Cookie => 'ory_kratos_session=jane-cookie');
    is $r->{status}, 403, 'a logout link with another token (from another site): 403';
    ok !exists $r->{headers}{'set-cookie'}, 'and the cookie stays';
};

subtest 'the double alone: return_to to a --return-to-origin' => sub {
    $t->_daemon('login', "$TOP/t/lib/kratos-double", '--listen', '127.0.0.1:' . $t->port('login'),
        '--sessions', "$TOP/t/lib/sessions.json", '--return-to-origin', 'https://app.example.com');
    my $login = sub ($return_to) {
        $t->request(method => 'POST', path => '/self-service/login/browser', port => $t->port('login'),
            headers => ['Content-Type' => 'application/x-www-form-urlencoded'],
            body => "identity=bob&return_to=$return_to");
    };
    for my $case (
        ['https%3A%2F%2Fapp.example.com%2Fx', 303, 'https://app.example.com/x'],
        ['https%3A%2F%2FAPP.example.com%3A443%2Fx', 303, 'https://APP.example.com:443/x'],
        ['http%3A%2F%2Fapp.example.com%2Fx', 400],
        ['https%3A%2F%2Fapp.example.com%3A8443%2Fx', 400],
        ['https%3A%2F%2Fapp.example.com.evil.example%2Fx', 400],
        ['', 303, '/'],
    ) {
        my ($return_to, $status, $location) = @$case;
        my $r = $login->($return_to);
        is $r->{status}, $status, "return_to=$return_to: $status";
        is $r->{headers}{location}, $location, "to $location" if $location;
        is $r->{headers}{'set-cookie'}, 'ory_kratos_session=bob-cookie; Path=/; HttpOnly; SameSite=Lax',
            "with Bob's session cookie" if $status == 303;
    }
    $t->_stop_proc('login');
};

# Runs the Selenium script, in a process group of its own so that nothing of the browser can
# outlive it; returns (exit code, stdout, stderr).
sub browse (@args) {
    my $home = $t->prefix . '/browser-home';
    make_path($home);
    my ($stdout, $stderr) = map { $t->prefix . "/browser.$_" } qw(out err);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::setpgid(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $stdout;
        open STDERR, '>', $stderr;
        local $ENV{HOME} = $home;
        exec($PYTHON, '-c', selenium_script(), @args) or POSIX::_exit(127);
    }
    my $deadline = time + 180;
    while (waitpid($pid, WNOHANG) == 0) {
        if (time > $deadline) { kill 'KILL', -$pid; waitpid $pid, 0; last }
        sleep 0.1;
    }
    my $rc = $? >> 8;
    kill 'KILL', -$pid;    # whatever chromedriver or Chromium left behind
    return ($rc, OryTest::_slurp($stdout), OryTest::_slurp($stderr));
}

subtest 'headless Chromium clicks through the demo' => sub {
    make_path($ARTIFACTS);
    unlink $SHOT, "$ARTIFACTS/demo-login.png";
    my $start = "${url}orders?id=7&page=2";
    my ($rc, $json, $err) = browse($start, $ARTIFACTS, $t->prefix . '/chromium-profile');
    my $seen = eval { decode_json($json) } // {};
    is $rc, 0, 'the browser session ran to its end' or diag "stdout: $json\nstderr: $err";
    diag "browser: $seen->{error}" if $seen->{error};

    my $login = $seen->{login} // {};
    like $login->{url} // '', qr{^\Q${url}self-service/login/browser?return_to=\E}, 'the application sent Chromium to the login page';
    is $login->{return_to}, $start, 'with the URL it asked for in return_to';
    like $login->{notice} // '', qr/Kratos stand-in for the nginx-ory demo \x{2014} not Ory Kratos/,
        'the page says it is a stand-in, not Ory Kratos';
    like $login->{text} // '', qr/Jane Doe.*Bob Smith.*Alice Martin/s, 'and lists the demo identities';

    my $in = $seen->{logged_in} // {};
    is $in->{url}, $start, 'after picking Jane: back on the page first asked for';
    is $in->{hello}, 'hello Jane', 'which says hello Jane';
    like $in->{text} // '', qr/jane\@example\.com/, 'and shows her email';
    my ($cookie) = grep { $_->{name} eq 'ory_kratos_session' } @{ $in->{cookies} // [] };
    is $cookie->{value}, 'jane-cookie', "the browser holds Jane's session cookie";
    ok $cookie->{httpOnly}, 'the cookie is HttpOnly';
    is $cookie->{sameSite}, 'Lax', 'SameSite=Lax';
    is $cookie->{path}, '/', 'Path=/';
    unlike $in->{document_cookie} // 'undef', qr/ory_kratos_session/, 'page scripts cannot read it (document.cookie)';

    ok -s $SHOT, "a screenshot of the logged-in page: $SHOT";
    my $png = OryTest::_slurp($SHOT);
    my ($w, $h) = unpack 'NN', substr $png, 16, 8;
    is substr($png, 0, 8), "\x89PNG\r\n\x1a\n", 'a PNG';
    ok $w >= 800 && $h >= 600, "of the window's size (${w}x$h)";
    ok -s "$ARTIFACTS/demo-login.png", 'and one of the login page';
    diag "screenshots: $SHOT (logged in), $ARTIFACTS/demo-login.png (the login page)";

    my $out = $seen->{logged_out} // {};
    like $out->{url} // '', qr{^\Q${url}self-service/login/browser?return_to=http%3A%2F%2F127.0.0.1%3A$demo{DEMO_PORT}%2F\E$},
        'logging out leads to the login page again';
    like $out->{notice} // '', qr/not Ory Kratos/, 'the stand-in\'s';
    is_deeply [grep { $_->{name} eq 'ory_kratos_session' } @{ $out->{cookies} // [] }], [], 'the cookie is gone';

    my $again = $seen->{again} // {};
    like $again->{url} // '', qr{^\Q${url}self-service/login/browser?\E}, 'the application, opened again: the login page';
};

# The demo's nginx logged nothing alarming.
my $log = OryTest::_slurp("$demo{DEMO_PREFIX}/logs/error.log");
unlike $log, qr/\[alert\]|\[emerg\]|\[crit\]|exited on signal/, "the demo's error.log has no alert, emerg, crit or crash";

($code, $out) = demo(\%demo, 'stop');
is $code, 0, 'scripts/demo stop';
$demo_started = 0;
is_deeply [processes_of($demo{DEMO_PREFIX})], [], 'nothing of the demo runs any more';
ok !listening($demo{$_}), "nothing listens on $_" for qw(DEMO_PORT DEMO_KRATOS_PORT DEMO_APP_PORT);

done_testing;

# What Chromium sees, step by step, as one JSON object on stdout; on an error, what it saw
# until then and `error`, exit 1.
sub selenium_script () { <<'PY' }
import json, sys
from urllib.parse import parse_qs, urlsplit
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

start, artifacts, profile = sys.argv[1:4]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--window-size=1024,768", "--user-data-dir=" + profile):
    options.add_argument(arg)
seen = {}
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    wait = WebDriverWait(driver, 15)

    def page(**extra):
        p = {"url": driver.current_url, "title": driver.title,
             "text": driver.find_element(By.TAG_NAME, "body").text}
        notice = driver.find_elements(By.ID, "stand-in")
        if notice:
            p["notice"] = notice[0].text
        p.update(extra)
        return p

    on_login = lambda d: urlsplit(d.current_url).path == "/self-service/login/browser"
    driver.get(start)
    wait.until(on_login)
    seen["login"] = page(return_to=parse_qs(urlsplit(driver.current_url).query).get("return_to", [None])[0])
    if not driver.save_screenshot(artifacts + "/demo-login.png"):
        raise RuntimeError("save_screenshot failed")

    driver.find_element(By.ID, "login-jane").click()
    wait.until(lambda d: d.current_url == start and d.find_elements(By.ID, "hello"))
    seen["logged_in"] = page(hello=driver.find_element(By.ID, "hello").text,
                             cookies=driver.get_cookies(),
                             document_cookie=driver.execute_script("return document.cookie"))
    if not driver.save_screenshot(artifacts + "/demo-logged-in.png"):
        raise RuntimeError("save_screenshot failed")

    driver.find_element(By.ID, "logout").click()
    wait.until(on_login)
    seen["logged_out"] = page(cookies=driver.get_cookies())

    driver.get(start)
    wait.until(on_login)
    seen["again"] = page()
except Exception as e:
    seen["error"] = "%s: %s" % (type(e).__name__, e)
finally:
    driver.quit()
print(json.dumps(seen))
sys.exit(1 if "error" in seen else 0)
PY
