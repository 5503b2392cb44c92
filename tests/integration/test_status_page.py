"""The status page as a person sees it, in a real browser (headless Chromium through
Selenium): /admin/ sends them to the login form, the admin token logs them in (an
HttpOnly cookie, never the token), and the page shows the live conversations by state
and stream, the delivery counts, the recent handoff with its route decision, the
last reload, and a row per conversation that links to its detail.

Setup (relay_env.Environment): the Direct Line emulator and its scripted bot, the
generic webhook hub's fake, handoffd between them with an admin token.
"""
import json
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from conftest import BIN
from relay_env import Environment, close_cleanly

TOKEN = "status-page-token-0123456789"


@pytest.fixture
def env(tmp_path):
    e = Environment(BIN, tmp_path, extra_config=f'admin = {{ token = "{TOKEN}" }},')
    yield e
    close_cleanly(e)


@pytest.fixture
def browser(tmp_path):
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    opts = Options()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def table(driver, table_id):
    """The rows of the table TABLE_ID as lists of cell texts (header rows included)."""
    rows = driver.find_elements(By.CSS_SELECTOR, f"table#{table_id} tr")
    return [[c.text for c in r.find_elements(By.CSS_SELECTOR, "th, td")] for r in rows]


def test_login_counts_and_click_through(env, browser):
    hub, port = env.hub, env.port
    hub.message(port, "c-1", "hello")
    hub.wait_messages("c-1", 2)
    hub.message(port, "c-1", "My order is late, I want a human")
    hub.wait_handoff("c-1")
    env.daemon.wait_line("handoff.delivered conv=webhook:c-1")
    hub.message(port, "c-2", "<b>just</b> a question")
    hub.wait_messages("c-2", 2)
    base = f"http://127.0.0.1:{port}"
    wait = WebDriverWait(browser, 20)

    # not logged in: the login form; a wrong token is refused
    browser.get(base + "/admin/")
    assert browser.current_url == base + "/admin/login"
    browser.find_element(By.ID, "token").send_keys("not-the-token-at-all")
    browser.find_element(By.ID, "login").click()
    wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "Wrong token."))
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login").click()
    wait.until(EC.presence_of_element_located((By.ID, "states")))
    assert browser.current_url == base + "/admin/"
    cookie = browser.get_cookie("handoffd_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    assert browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]').get_attribute("content") == "5"

    # what a person sees: counts by state and stream, totals, the handoff, the rows
    states = {r[0]: r[1:] for r in table(browser, "states")[1:]}
    assert browser.find_element(By.ID, "total").text == "2"
    assert states["routing"][3] == "1" and states["bot"][3] == "1"
    assert int(states["routing"][0]) + int(states["routing"][1]) == 1, "streaming or parked"
    delivery = table(browser, "delivery")
    assert delivery[2][0] == "delivered since start" and int(delivery[2][1]) >= 3 and int(delivery[2][2]) >= 4
    assert table(browser, "handoff-totals")[1] == ["1", "0", "0", "0"]
    handoffs = table(browser, "handoffs")
    assert len(handoffs) == 2 and handoffs[1][0] == "webhook:c-1" and handoffs[1][1].startswith("h-")
    assert '"queue":"orders"' in handoffs[1][4] and '"rule":1' in handoffs[1][4]
    assert table(browser, "reload")[0][0] == "generation serving"
    rows = {r[0]: r for r in table(browser, "conversations")[1:]}
    assert set(rows) == {"webhook:c-1", "webhook:c-2"}
    assert rows["webhook:c-1"][1] == "routing" and rows["webhook:c-2"][1] == "bot"
    assert "just" not in browser.page_source, "no message text on the page"

    # click through to the conversation's detail, then to its JSON
    browser.find_element(By.CSS_SELECTOR, "table#conversations a[href$='webhook%3Ac-1']").click()
    wait.until(EC.presence_of_element_located((By.ID, "events")))
    assert browser.find_element(By.TAG_NAME, "h1").text == "webhook:c-1"
    fields = {r[0]: r[1] for r in table(browser, "detail")}
    assert fields["state"] == "routing" and fields["handoff"].startswith("h-")
    assert '"queue":"orders"' in fields["route decision"]
    events = [r[1:] for r in table(browser, "events")[1:]]
    assert events[0][0] == "opened" and ["routed", "queue=orders: rule 1 matched"] in events
    assert "My order" not in browser.page_source
    browser.find_element(By.ID, "json").click()
    wait.until(EC.url_contains("/admin/conversations/"))
    detail = json.loads(browser.find_element(By.TAG_NAME, "body").text)
    assert detail["key"] == "webhook:c-1" and detail["state"] == "routing"
    assert detail["route"]["queue"] == "orders"
    assert [e["event"] for e in detail["events"]][:1] == ["opened"]


def test_page_escapes_what_it_shows(env, browser):
    """A conversation id with markup in it shows as text, not as markup."""
    env.hub.message(env.port, "<i>x</i>&\"'", "hello")
    env.daemon.wait_line("conv.open")
    base = f"http://127.0.0.1:{env.port}"
    browser.get(base + "/admin/login")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.ID, "conversations")))
    rows = table(browser, "conversations")[1:]
    assert [r[0] for r in rows] == ["webhook:<i>x</i>&\"'"]
    assert not browser.find_elements(By.CSS_SELECTOR, "table#conversations i")
