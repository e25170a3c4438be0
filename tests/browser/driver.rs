//! A person at a browser: headless Chromium driven over WebDriver (chromedriver + fantoccini).
//!
//! Every step finds what a person would see: a field by its label, a button or link by its
//! text. Every page the browser arrives at is checked with axe-core (serious and critical
//! violations fail the test), for horizontal overflow at the current width, and for a title
//! that says where the user is.

use base64::Engine;
use fantoccini::elements::Element;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PHONE: (u32, u32) = (390, 844);
pub const DESKTOP: (u32, u32) = (1366, 768);
pub const NARROWEST: u32 = 320;

/// Words of the system, not of patients, that no portal page may show.
const JARGON: &[&str] = &[
    "thread",
    "session",
    "csrf",
    "token",
    "null",
    "undefined",
    "error code",
    "http ",
    "sql",
    "user id",
    "patient id",
    "record id",
    "idempotency",
    "payload",
    "invalid input",
];

/// Where Debian's packages put the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// axe-core, installed from the npm registry by `.ci/run` (`npm ci` in tests/browser).
pub fn axe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/axe-core/axe.min.js")
}

pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// What is missing for the browser tests to run here, if anything.
pub fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        if !Path::new(path).exists() {
            missing.push(format!("{path} (Debian package {package})"));
        }
    }
    if !axe_path().exists() {
        missing.push("axe-core (npm ci --prefix tests/browser)".into());
    }
    missing
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One chromedriver process and one browser session in it.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: fantoccini::Client,
    driver: Child,
    profile: PathBuf,
    pub base: String,
    /// The journey's name: the prefix of its screenshots.
    journey: String,
    axe: String,
}

impl Browser {
    pub fn open(journey: &str, base: &str) -> Browser {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile =
            std::env::temp_dir().join(format!("carepost-chromium-{}-{port}", std::process::id()));
        let mut options = serde_json::Map::new();
        options.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let attempt = rt.block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(options.clone())
                    .connect(&url),
            );
            match attempt {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => panic!("chromedriver: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let axe = std::fs::read_to_string(axe_path()).expect("axe-core is installed");
        std::fs::create_dir_all(screenshot_dir()).unwrap();
        let browser = Browser {
            rt,
            client,
            driver,
            profile,
            base: base.trim_end_matches('/').to_string(),
            journey: journey.to_string(),
            axe,
        };
        browser.resize(DESKTOP);
        browser
    }

    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    // -----------------------------------------------------------------------------------------
    // Moving around

    /// Opens a path (or a full URL) as if typed into the address bar.
    pub fn visit(&mut self, path: &str) {
        let url = if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            path.to_string()
        };
        self.block(self.client.goto(&url)).unwrap();
        self.arrived();
    }

    /// Clicks the link whose visible text is `text` (exactly, ignoring surrounding space).
    pub fn click_link(&mut self, text: &str) {
        let xpath = format!(
            "//a[normalize-space(.)={0} or normalize-space(@aria-label)={0}]",
            xpath_literal(text)
        );
        let link = self.find_visible(&xpath, &format!("link \"{text}\""));
        self.block(link.click()).unwrap();
        self.arrived();
    }

    /// Clicks the link whose visible text contains `text`.
    pub fn click_link_containing(&mut self, text: &str) {
        let xpath = format!("//a[contains(normalize-space(.), {})]", xpath_literal(text));
        let link = self.find_visible(&xpath, &format!("link containing \"{text}\""));
        self.block(link.click()).unwrap();
        self.arrived();
    }

    /// Presses the button whose visible text is `text`.
    pub fn press(&mut self, text: &str) {
        let button = self.button(text);
        self.block(button.click()).unwrap();
        self.arrived();
    }

    /// Presses the button `text` inside the form that also holds the field labelled `field`.
    pub fn press_in_form_of(&mut self, field: &str, text: &str) {
        let input = self.field(field);
        let form = self
            .block(input.find(Locator::XPath("./ancestor::form")))
            .expect("field is in a form");
        let xpath = format!(
            ".//button[normalize-space(.)={0}] | .//input[@type='submit' and @value={0}]",
            xpath_literal(text)
        );
        let button = self
            .block(form.find(Locator::XPath(&xpath)))
            .unwrap_or_else(|_| panic!("no button \"{text}\" in the form of \"{field}\""));
        self.block(button.click()).unwrap();
        self.arrived();
    }

    fn button(&self, text: &str) -> Element {
        let xpath = format!(
            "//button[normalize-space(.)={0}] | //input[@type='submit' and @value={0}]",
            xpath_literal(text)
        );
        self.find_visible(&xpath, &format!("button \"{text}\""))
    }

    /// The first displayed element matching `xpath`; panics naming `what` and the page.
    fn find_visible(&self, xpath: &str, what: &str) -> Element {
        let all = self
            .block(self.client.find_all(Locator::XPath(xpath)))
            .unwrap();
        for element in all {
            if self.block(element.is_displayed()).unwrap_or(false) {
                return element;
            }
        }
        panic!(
            "no visible {what} on {}\n--- page text ---\n{}",
            self.path(),
            self.text()
        );
    }

    // -----------------------------------------------------------------------------------------
    // Forms, by label

    /// The form control labelled `label`: a `<label>` whose text starts with `label` (labels
    /// may carry a hint after the name), by its `for` or by the control inside it.
    pub fn field(&self, label: &str) -> Element {
        let lit = xpath_literal(label);
        let exact = format!("//label[normalize-space(.)={lit}]");
        let prefix = format!("//label[starts-with(normalize-space(.), {lit})]");
        let found = self.find_label(&[exact, prefix], label);
        let target = self.block(found.attr("for")).unwrap();
        match target {
            Some(id) => self
                .block(self.client.find(Locator::Id(&id)))
                .unwrap_or_else(|_| panic!("label \"{label}\" points at a missing #{id}")),
            None => self
                .block(found.find(Locator::XPath(".//input|.//select|.//textarea")))
                .unwrap_or_else(|_| panic!("label \"{label}\" has no control")),
        }
    }

    fn find_label(&self, xpaths: &[String], label: &str) -> Element {
        for xpath in xpaths {
            let all = self
                .block(self.client.find_all(Locator::XPath(xpath)))
                .unwrap();
            if let Some(first) = all.into_iter().next() {
                return first;
            }
        }
        panic!(
            "no field labelled \"{label}\" on {}\n--- page text ---\n{}",
            self.path(),
            self.text()
        );
    }

    /// Clears the field labelled `label` and types `value` into it.
    pub fn fill(&self, label: &str, value: &str) {
        let field = self.field(label);
        self.block(field.clear()).unwrap();
        self.block(field.send_keys(value)).unwrap();
    }

    /// Chooses the option whose visible text contains `option` in the select labelled `label`.
    pub fn choose(&self, label: &str, option: &str) {
        let field = self.field(label);
        let xpath = format!(
            ".//option[contains(normalize-space(.), {})]",
            xpath_literal(option)
        );
        let choice = self
            .block(field.find(Locator::XPath(&xpath)))
            .unwrap_or_else(|_| panic!("no option \"{option}\" in \"{label}\""));
        self.block(choice.click()).unwrap();
    }

    /// Ticks (or leaves ticked) the checkbox or radio button labelled `label`.
    pub fn tick(&self, label: &str) {
        let field = self.field(label);
        if !self.block(field.is_selected()).unwrap() {
            self.block(field.click()).unwrap();
        }
    }

    /// Picks `file` in the file field labelled `label`.
    pub fn attach(&self, label: &str, file: &Path) {
        let field = self.field(label);
        self.block(field.send_keys(&file.display().to_string()))
            .unwrap();
    }

    /// The current value of the field labelled `label`.
    pub fn value_of(&self, label: &str) -> String {
        let field = self.field(label);
        self.block(field.prop("value")).unwrap().unwrap_or_default()
    }

    // -----------------------------------------------------------------------------------------
    // Reading the page

    pub fn text(&self) -> String {
        self.block(async {
            let body = self.client.find(Locator::Css("body")).await?;
            body.text().await
        })
        .unwrap_or_default()
    }

    pub fn title(&self) -> String {
        self.block(self.client.title()).unwrap()
    }

    pub fn path(&self) -> String {
        let url = self.block(self.client.current_url()).unwrap();
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        path
    }

    #[track_caller]
    pub fn assert_text(&self, expected: &str) {
        let text = self.text();
        assert!(
            text.contains(expected),
            "expected \"{expected}\" on {}\n--- page text ---\n{text}",
            self.path()
        );
    }

    #[track_caller]
    pub fn assert_no_text(&self, unexpected: &str) {
        let text = self.text();
        assert!(
            !text.contains(unexpected),
            "did not expect \"{unexpected}\" on {}\n--- page text ---\n{text}",
            self.path()
        );
    }

    /// Runs `script` in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.block(self.client.execute(script, vec![])).unwrap()
    }

    // -----------------------------------------------------------------------------------------
    // Keyboard

    /// Presses Tab until the focused element's accessible text is `name` (its label's first
    /// line, its text, or its value); panics after 80 presses, listing what was reached.
    pub fn tab_to(&self, name: &str) {
        let mut reached = Vec::new();
        for _ in 0..80 {
            self.key("\u{e004}");
            let focused = self.focused_name();
            if focused == name {
                return;
            }
            reached.push(focused);
        }
        panic!(
            "Tab never reached \"{name}\" on {}; it reached: {reached:?}",
            self.path()
        );
    }

    /// What a screen reader would call the focused element, roughly.
    pub fn focused_name(&self) -> String {
        let v = self.eval(
            "const e = document.activeElement; if (!e) return '';
             if (e.labels && e.labels.length) return e.labels[0].innerText.split('\\n')[0];
             return (e.getAttribute('aria-label') || e.innerText || e.value || '').trim();",
        );
        let name = v.as_str().unwrap_or_default();
        name.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Whether the focused element is visibly marked (an outline or a box shadow).
    pub fn focus_is_visible(&self) -> bool {
        self.eval(
            "const e = document.activeElement; const s = getComputedStyle(e);
             return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2)
                 || (s.boxShadow && s.boxShadow !== 'none');",
        )
        .as_bool()
        .unwrap_or(false)
    }

    /// Presses keys as a keyboard would, wherever focus is (WebDriver key codes, e.g.
    /// "\u{e007}" for Enter).
    pub fn key(&self, keys: &str) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let mut sequence = KeyActions::new("keyboard".into());
        for value in keys.chars() {
            sequence = sequence
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        self.block(self.client.perform_actions(sequence)).unwrap();
    }

    /// Presses Enter on the focused element and waits for the next page.
    pub fn enter(&mut self) {
        self.key("\u{e007}");
        self.arrived();
    }

    /// Types into the focused element.
    pub fn type_text(&self, text: &str) {
        self.key(text);
    }

    // -----------------------------------------------------------------------------------------
    // Size, screenshots, checks

    pub fn resize(&self, (w, h): (u32, u32)) {
        // The CDP override sets the layout viewport exactly, whatever the window frame.
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": w, "height": h, "deviceScaleFactor": 1, "mobile": w < 600}),
        );
    }

    fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.block(self.client.issue_cmd(Cdp(cmd.to_string(), params)))
            .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"))
    }

    /// Saves the page at phone and desktop size as `<journey>-<name>-{phone,desktop}.png`,
    /// checking at each size that nothing overflows sideways; also checks the narrowest
    /// supported width.
    pub fn screenshots(&mut self, name: &str) {
        for (label, size) in [("phone", PHONE), ("desktop", DESKTOP)] {
            self.resize(size);
            self.assert_fits(label);
            // The whole page, not only what fits on the screen.
            let shot = self.cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            );
            let png = base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().expect("screenshot data"))
                .unwrap();
            let file = screenshot_dir().join(format!("{}-{name}-{label}.png", self.journey));
            std::fs::write(file, png).unwrap();
        }
        self.resize((NARROWEST, 640));
        self.assert_fits("320 px");
        self.resize(DESKTOP);
    }

    #[track_caller]
    fn assert_fits(&self, label: &str) {
        let overflow = self.overflow();
        assert!(
            overflow.is_empty(),
            "{} overflows sideways at {label}: {overflow}",
            self.path()
        );
    }

    /// What sticks out sideways at the current width ("" when nothing does).
    pub fn overflow(&self) -> String {
        let overflow = self.eval(
            "const d = document.documentElement;
             const wide = [...document.querySelectorAll('body *')]
               .filter(e => e.getBoundingClientRect().right > d.clientWidth + 1)
               .slice(0, 3).map(e => e.tagName + '.' + e.className + ': '
                                + (e.innerText || '').slice(0, 40));
             return d.scrollWidth > d.clientWidth ? wide.join(' | ') || 'page' : '';",
        );
        overflow.as_str().unwrap_or_default().to_string()
    }

    /// After every navigation, the page must have no problem.
    #[track_caller]
    fn arrived(&mut self) {
        let problems = self.page_problems();
        assert!(
            problems.is_empty(),
            "problems on {}:\n  {}",
            self.path(),
            problems.join("\n  ")
        );
    }

    /// Opens a URL without checking the page (for the checks' own test).
    pub fn visit_unchecked(&mut self, url: &str) {
        self.block(self.client.goto(url)).unwrap();
    }

    /// What is wrong with the current page: a title that does not say where the user is, any
    /// script, any serious or critical axe-core violation, and on portal pages jargon or
    /// internal numbers.
    pub fn page_problems(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let title = self.title();
        if !(title.contains(" – ") || title.contains(" - ") || title.contains(" · ")) {
            problems.push(format!("title: \"{title}\" does not say where the user is"));
        }
        // Every page works without JavaScript: Carepost serves none (and its CSP allows none).
        if self.eval("return document.scripts.length;") != 0 {
            problems.push("script: the page carries a script".into());
        }
        problems.extend(self.axe_violations());
        if self.path().starts_with("/portal") {
            problems.extend(self.jargon());
        }
        problems
    }

    /// Portal pages speak to patients: no record numbers and none of the system's own words.
    pub fn jargon(&self) -> Vec<String> {
        let text = self.text();
        let lower = text.to_lowercase();
        let mut found: Vec<String> = JARGON
            .iter()
            .filter(|word| lower.contains(*word))
            .map(|word| format!("jargon: \"{word}\""))
            .collect();
        if let Some(number) = text.split_whitespace().find(|w| {
            w.len() > 1 && w.starts_with('#') && w[1..].chars().all(|c| c.is_ascii_digit())
        }) {
            found.push(format!("jargon: an internal number {number}"));
        }
        found
    }

    /// axe-core's serious and critical violations on the current page, one line each.
    pub fn axe_violations(&mut self) -> Vec<String> {
        let script = format!(
            "{}\nconst done = arguments[arguments.length - 1];
             axe.run(document, {{resultTypes: ['violations']}}).then(r => done(
               r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' — '
                   + v.nodes.slice(0, 3).map(n => n.target.join(' ')
                       + (n.failureSummary ? ' [' + n.failureSummary.replace(/\\n/g, ' ') + ']' : ''))
                     .join('; '))))
               .catch(e => done(['axe failed: ' + e]));",
            self.axe
        );
        let result = self
            .block(self.client.execute_async(&script, vec![]))
            .unwrap();
        serde_json::from_value(result).unwrap()
    }

    /// Ends the browser session and chromedriver (as dropping it does).
    pub fn close(self) {}
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After a failed step too: end the session so chromedriver stops its Chromium, then
        // stop chromedriver.
        let client = self.client.clone();
        let _ = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), client.close()).await
        });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A Chrome DevTools command through chromedriver's `goog/cdp/execute` endpoint.
#[derive(Debug)]
struct Cdp(String, Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or("")
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.0, "params": self.1}).to_string();
        (http::Method::POST, Some(body))
    }
}

/// An XPath string literal for any text (XPath 1.0 has no escapes).
pub fn xpath_literal(s: &str) -> String {
    if !s.contains('\'') {
        format!("'{s}'")
    } else if !s.contains('"') {
        format!("\"{s}\"")
    } else {
        let parts: Vec<String> = s.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}
