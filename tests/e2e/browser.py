"""Driving the running app in a browser tab the way a person does, waiting on the app's own state.

Streamlit marks its root element with `data-test-connection-state` ("CONNECTED" once the websocket is up)
and `data-test-script-state` (back to "notRunning" when a script run has finished). After every action the
tests wait for both, then for the element they expect; no test waits for a fixed time.
"""

from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

SETTLE_TIMEOUT_MS = 120_000  # a first run loads both models next to a training job on shared cores
# How long an expected element may take to appear after the app settled. A script run that has not yet
# started when `settle` looks (the server had not answered the click) is still in this budget.
EXPECT_TIMEOUT_MS = 60_000
RESULT_TIMEOUT_MS = 300_000  # background jobs: a batch over the sample folder, a tiny training run


# The sidebar's name of each page, by its URL path.
PAGE_TITLES = {
    "": "Home",
    "Diagnose": "Diagnose",
    "Batch": "Batch",
    "Review": "Review queue",
    "History": "History",
    "Series": "Series",
    "PACS": "PACS",
    "Train": "Train",
    "Leaderboard": "Leaderboard",
    "Models": "Models",
    "Users": "Users",
    "Audit": "Audit log",
}


@dataclass
class App:
    page: Page
    url: str
    screenshot_dir: Path | None  # None: screenshots are not written
    username: str
    password: str

    def load(self, path: str = "") -> None:
        """Open a URL of the app in this tab and wait for its run: a new browser session, signed in only when this
        profile's cookie names a live session (a reload keeps the tab signed in)."""
        self.page.goto(f"{self.url}/{path}")
        expect(self.page.get_by_test_id("stAppViewContainer")).to_be_attached(timeout=SETTLE_TIMEOUT_MS)
        self.settle()

    def sign_in(self, username: str | None = None, password: str | None = None) -> None:
        """Fill in the sign-in form and submit it, as a person does."""
        main = self.main()
        main.get_by_role("textbox", name="User name").fill(username or self.username)
        main.get_by_label("Password", exact=True).fill(password or self.password)
        self.click(main.get_by_role("button", name="Sign in"))

    def open(self, path: str = "") -> None:
        """Go to a page of the app (`""` is Home, "Diagnose" is views/1_Diagnose.py) through the sidebar, signing
        in first when this tab is not signed in yet."""
        if not self.page.get_by_test_id("stSidebarNav").is_visible():
            self.load()
            if not self.page.get_by_test_id("stSidebarNav").is_visible():
                self.sign_in()
            expect(self.page.get_by_test_id("stSidebarNav")).to_be_visible()
        self.click(self.page.get_by_test_id("stSidebarNav").get_by_role("link", name=PAGE_TITLES[path], exact=True))

    def settle(self) -> None:
        """Wait until the app is connected and its script run is over."""
        root = self.page.get_by_test_id("stApp")
        expect(root).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=SETTLE_TIMEOUT_MS)
        expect(root).to_have_attribute("data-test-script-state", "notRunning", timeout=SETTLE_TIMEOUT_MS)

    def main(self) -> Locator:
        """The page's main area (not the sidebar navigation)."""
        return self.page.get_by_test_id("stMain")

    def click(self, target: Locator) -> None:
        target.click()
        self.settle()

    def fill(self, target: Locator, text: str) -> None:
        """Type into a text input and commit it with Enter, as a person does."""
        target.fill(text)
        target.press("Enter")
        self.settle()

    def screenshot(self, name: str, show: Locator | None = None) -> None:
        """Save the window as docs/screenshots/<name>.png, scrolled to `show`, when screenshots are asked for."""
        if self.screenshot_dir is None:
            return
        self.settle()
        if show is not None:
            # The app scrolls inside its own container, so a full-page shot would still end at the window.
            show.evaluate("element => element.scrollIntoView({block: 'start'})")
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=self.screenshot_dir / f"{name}.png")
