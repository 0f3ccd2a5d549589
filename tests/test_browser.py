"""What a user sees, in a real browser: headless Chromium (Debian's `chromium`
and `chromium-driver`, see .ci/apt-packages) driven by Selenium, against a
booted default project behind its generated nginx site.

Web, one worker per queue and Flower run from the Procfile's own command
lines; nginx runs the generated site on free loopback ports with a
self-signed certificate for the project's domain, which Chromium maps to
127.0.0.1. The tests share that project and run in order.

Each page's screenshot goes to the test's tmp dir. To refresh the ones the
docs show (docs/images/), run:

    DOCS_SCREENSHOTS=1 .venv/bin/pytest tests/test_browser.py -n 0
"""

import base64
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from deploy_host import nginx_command, nginx_root

from helpers import (
    CHROMEDRIVER,
    CHROMIUM,
    POSTGRES,
    REDIS,
    ROOT,
    chromium,
    free_port,
    once_per_run,
    postgres_database,
    procfile,
    project_env,
    redis_database,
    require,
    run,
    start,
    wait_for_port,
    wait_until,
)

pytestmark = [pytest.mark.boot, pytest.mark.xdist_group("browser")]

DOCS_IMAGES = ROOT / "docs" / "images"
SCHEDULE_NAME = "Purge dead letters older than 30 days"
ADMIN_USER, ADMIN_PASSWORD = "admin", "browser-test-admin-password"
FLOWER_USER, FLOWER_PASSWORD = "flower", "browser-test-flower-password"
MISSING_REPORT = 424242  # the id the failing task is given, then created before the replay


class Stack:
    def __init__(self, project, env, logdir, base):
        self.project, self.env, self.logdir, self.base = project, env, logdir, base
        self.services = {}

    def manage(self, *args, timeout=120):
        return run(["python", "manage.py", *args], self.project, self.env, timeout=timeout)

    def shell(self, code, timeout=120):
        return self.manage("shell", "-c", code, timeout=timeout).stdout

    def start(self, process):
        """A Procfile process, started through sh as honcho does."""
        command = procfile(self.project)[process]
        service = start(process, ["sh", "-c", f"exec {command}"], self.project, self.env, self.logdir)
        self.services[process] = service
        return service

    def wait_in_shell(self, condition, timeout=60):
        """Poll a Django ORM expression in `manage.py shell` until it is true."""
        out = self.shell(
            "import time\n"
            "from ops.models import DeadLetter\n"
            "from reports.models import Report\n"
            f"deadline = time.monotonic() + {timeout}\n"
            f"while not ({condition}) and time.monotonic() < deadline:\n"
            "    time.sleep(0.3)\n"
            f"print('DONE' if ({condition}) else 'TIMEOUT')\n",
            timeout=timeout + 60,
        )
        assert out.strip().endswith("DONE"), f"{condition} still false after {timeout} s"


@pytest.fixture(scope="module")
def stack(request, rendered, venv, tmp_path_factory):
    once_per_run(request, "browser")
    require("Redis", REDIS)
    require("PostgreSQL", POSTGRES)
    for path in (CHROMIUM, CHROMEDRIVER):
        assert path.exists(), f"{path} is missing: apt-get install chromium chromium-driver (.ci/apt-packages)"
    workdir = tmp_path_factory.mktemp("browser")
    project = workdir / "project"
    shutil.copytree(rendered({}), project)
    ports = {"http": free_port(), "https": free_port(), "web": free_port(), "flower": free_port()}
    domain = "example.com"  # the default domain_name: nginx's server_name, Django's ALLOWED_HOSTS
    base = f"https://{domain}:{ports['https']}"
    # nginx's workers (www-data) serve the static files: a world-readable
    # directory outside pytest's private tmp dirs, as on a host.
    static = Path(tempfile.mkdtemp(prefix="cdc-browser-", dir="/var/tmp"))
    static.chmod(0o755)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, static, ignore_errors=True)
        numbers = stack.enter_context(redis_database(1))
        env = project_env(
            venv,
            PORT=str(ports["web"]),
            FLOWER_PORT=str(ports["flower"]),
            FLOWER_USER=FLOWER_USER,
            FLOWER_PASSWORD=FLOWER_PASSWORD,
            CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{numbers[0]}",
            DATABASE_URL=stack.enter_context(postgres_database()),
            DJANGO_ALLOWED_HOSTS=domain,
            # nginx passes the Host without its port; the browser's Origin keeps it.
            DJANGO_CSRF_TRUSTED_ORIGINS=base,
            DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
            DJANGO_STATIC_ROOT=str(static / "staticfiles"),
        )
        booted = Stack(project, env, workdir / "logs", base)
        stack.callback(lambda: [s.kill() for s in booted.services.values() if s.proc.poll() is None])
        booted.manage("migrate", "--no-input")
        booted.manage("collectstatic", "--no-input")
        booted.manage("createsuperuser", "--no-input", "--username", ADMIN_USER, "--email", "admin@example.com")
        workers = [process for process in procfile(project) if process.startswith("worker-")]
        for process in [*workers, "web", "flower"]:
            booted.start(process)
        for process in workers:
            queue = process.removeprefix("worker-")
            booted.services[process].wait_for_log(rf"{queue}@\S+ ready\.", timeout=90)
        for process in ("web", "flower"):
            wait_for_port(ports[process], proc=booted.services[process].proc)
        main = nginx_root(project, workdir / "nginx", app_dir=static, ports=ports)
        booted.services["nginx"] = start(
            "nginx", nginx_command(main, "-g", "daemon off;"), workdir, dict(os.environ), workdir / "logs"
        )
        wait_for_port(ports["https"], proc=booted.services["nginx"].proc)
        booted.domain = domain
        yield booted


@pytest.fixture(scope="module")
def browser(stack, tmp_path_factory):
    driver = chromium(
        tmp_path_factory.mktemp("chromium"),
        "--window-size=1360,760",
        "--ignore-certificate-errors",  # nginx's self-signed stand-in for certbot's certificate
        f"--host-resolver-rules=MAP {stack.domain} 127.0.0.1",
    )
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    directory = tmp_path_factory.mktemp("screenshots")

    def save(driver, name):
        path = directory / f"{name}.png"
        driver.save_screenshot(str(path))
        if os.environ.get("DOCS_SCREENSHOTS"):
            DOCS_IMAGES.mkdir(exist_ok=True)
            shutil.copy(path, DOCS_IMAGES / path.name)
        return path

    return save


def text(driver, selector="body"):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector).text


def wait_for_text(driver, expected, selector="body", timeout=30, reload=False):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if all(e in text(driver, selector) for e in expected):
                return
        assert time.monotonic() < deadline, f"{expected} not in {selector}: {text(driver, selector)[:2000]}"
        time.sleep(1)
        if reload:
            driver.refresh()


def status(driver):
    """The HTTP status of the page the browser shows."""
    return driver.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus")


def assert_styled(driver):
    """Every stylesheet and script of the page loaded: a page without its CSS
    still has all its text, but is not what a user should see."""
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => [e.name, e.initiatorType, e.responseStatus])"
    )
    assets = [(name.partition("?")[0], code) for name, kind, code in resources if kind in ("link", "script", "css")]
    assert any(name.endswith(".css") for name, _ in assets), resources
    assert all(code == 200 for _, code in assets), assets


def test_log_in_to_the_admin(stack, browser, screenshots):
    from selenium.webdriver.common.by import By

    browser.get(f"{stack.base}/admin/")
    assert "/admin/login/" in browser.current_url
    browser.find_element(By.ID, "id_username").send_keys(ADMIN_USER)
    browser.find_element(By.ID, "id_password").send_keys(ADMIN_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for_text(browser, ["Site administration", "Dead letters", "Periodic tasks", "Task results"])
    assert_styled(browser)
    # Fold the admin's navigation sidebar, as its toggle would (nav_sidebar.js
    # remembers it in localStorage): the screenshots then show whole tables.
    browser.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    screenshots(browser, "admin")


def test_replay_a_dead_letter(stack, browser, screenshots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # A task that fails for good: its report does not exist (yet).
    stack.shell(f"from reports.tasks import render_report; render_report.delay({MISSING_REPORT})")
    stack.wait_in_shell("DeadLetter.objects.filter(task_name='reports.tasks.render_report').exists()")
    browser.get(f"{stack.base}/admin/ops/deadletter/")
    wait_for_text(browser, ["reports.tasks.render_report", "DoesNotExist", "1 dead letter"], "#content")
    # The cause is fixed: the report now exists. Replay the task from the admin.
    stack.shell(
        f"from reports.models import Report; Report.objects.create(pk={MISSING_REPORT}, title='Replayed', "
        "recipient='ops@example.com')"
    )
    browser.find_element(By.CSS_SELECTOR, "input[name=_selected_action]").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("replay")
    assert_styled(browser)
    screenshots(browser, "dead-letters")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    wait_for_text(browser, ["Replayed 1 task(s)."], ".messagelist")
    assert "0 dead letters" in text(browser, "#content")
    # The replayed task really ran, on the render queue's worker.
    stack.wait_in_shell(f"Report.objects.filter(pk={MISSING_REPORT}, status='ready').exists()")
    assert "reports.tasks.render_report[" in stack.services["worker-render"].output()


def test_periodic_tasks_and_task_results(stack, browser, screenshots):
    browser.get(f"{stack.base}/admin/django_celery_beat/periodictask/")
    wait_for_text(browser, [SCHEDULE_NAME, "ops.tasks.purge_dead_letters"], "#content")
    assert_styled(browser)
    screenshots(browser, "periodic-tasks")
    browser.get(f"{stack.base}/admin/django_celery_results/taskresult/")
    # The failed first run and the successful replay, both stored (django-db results).
    wait_for_text(browser, ["reports.tasks.render_report", "FAILURE", "SUCCESS"], "#result_list", reload=True)
    assert_styled(browser)
    screenshots(browser, "task-results")


def test_add_a_periodic_task_in_the_admin(stack, browser):
    """The steps of docs/getting-started.md ("Your first periodic task"), every
    2 seconds instead of every minute; beat then sends it and a worker runs it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    name = "Purge dead letters often"
    browser.get(f"{stack.base}/admin/django_celery_beat/periodictask/add/")
    wait_for_text(browser, ["Task (registered)", "Interval Schedule"], "#content")
    browser.find_element(By.ID, "id_name").send_keys(name)
    Select(browser.find_element(By.ID, "id_regtask")).select_by_value("ops.tasks.purge_dead_letters")
    form = browser.current_window_handle
    browser.find_element(By.ID, "add_id_interval").click()  # the + beside Interval Schedule
    assert wait_until(lambda: len(browser.window_handles) == 2, timeout=30)
    browser.switch_to.window(next(h for h in browser.window_handles if h != form))
    wait_for_text(browser, ["Number of Periods", "Interval Period"], "#content")
    browser.find_element(By.ID, "id_every").send_keys("2")
    Select(browser.find_element(By.ID, "id_period")).select_by_visible_text("Seconds")
    browser.find_element(By.NAME, "_save").click()
    assert wait_until(lambda: len(browser.window_handles) == 1, timeout=30)
    browser.switch_to.window(form)
    interval = Select(browser.find_element(By.ID, "id_interval"))
    assert wait_until(lambda: "every 2 seconds" in interval.first_selected_option.text, timeout=30)
    browser.find_element(By.NAME, "_save").click()
    wait_for_text(browser, [f"“{name}: every 2 seconds” was added successfully"], ".messagelist")
    worker = stack.services["worker-default"]
    start = len(worker.output())
    beat = stack.start("beat")
    beat.wait_for_log(rf"Sending due task {name} \(ops\.tasks\.purge_dead_letters\)", timeout=60)
    worker.wait_for_log(r"ops\.tasks\.purge_dead_letters\[[\w-]+\] succeeded", timeout=60, start=start)


def test_flower_through_nginx(stack, browser, screenshots):
    browser.get(f"{stack.base}/flower/")
    assert status(browser) == 401
    assert "Workers" not in text(browser)
    token = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    queues = [p.removeprefix("worker-") for p in procfile(stack.project) if p.startswith("worker-")]
    browser.get(f"{stack.base}/flower/workers?refresh=1")
    assert status(browser) == 200
    wait_for_text(browser, [f"{queue}@" for queue in queues], "#workers-table", reload=True)
    rows = [row for row in text(browser, "#workers-table tbody").splitlines() if "@" in row]
    assert sorted(row.split("@")[0] for row in rows) == sorted(queues), rows
    assert_styled(browser)
    screenshots(browser, "flower-workers")
