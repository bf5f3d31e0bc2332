//! A real browser: Debian's headless Chromium driven through chromium-driver (WebDriver)
//! with fantoccini. A person's moves — fill the field labelled X, press the button Y — are
//! helpers here, found by the visible texts a person reads, so the pages' labels are what
//! the tests hold to.

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::net::free_port;
use super::nginx::Killed;

/// chromedriver, killed when dropped with the browsers it started (its process group).
pub struct Driver {
    _child: Killed,
    pub url: String,
}

impl Driver {
    pub fn start() -> Driver {
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = Killed::spawn(
            cmd,
            "chromedriver (apt-get install chromium chromium-driver)",
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A new browser with its own profile (its own cookies), 1280 px wide.
    pub async fn browser(&self, origin: &str) -> Page {
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,4000",
                         "--hide-scrollbars", "--force-device-scale-factor=1"],
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session");
        // Started tall so that whole pages fit a screenshot; browsed at 1280 x 900.
        client.set_window_size(1280, 900).await.unwrap();
        Page {
            c: client,
            origin: origin.to_owned(),
        }
    }
}

/// One browser window on the deployment's origin.
pub struct Page {
    pub c: Client,
    pub origin: String,
}

const WAIT: Duration = Duration::from_secs(15);

/// XPath string literal for `s` (no page text here holds both quote kinds).
fn lit(s: &str) -> String {
    if s.contains('\'') {
        format!("\"{s}\"")
    } else {
        format!("'{s}'")
    }
}

impl Page {
    pub async fn open(&self, path: &str) {
        self.c
            .goto(&format!("{}{path}", self.origin))
            .await
            .unwrap();
    }

    /// The path and query the browser shows now.
    pub async fn at(&self) -> String {
        let url = self.c.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the browser is at a path starting with `prefix`.
    pub async fn wait_at(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let at = self.at().await;
            if at.starts_with(prefix) {
                return at;
            }
            assert!(Instant::now() < deadline, "never reached {prefix}; at {at}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first of `xpath`'s elements that is displayed, waiting for one.
    pub async fn visible(&self, xpath: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(all) = self.c.find_all(Locator::XPath(xpath)).await {
                for e in all {
                    if e.is_displayed().await.unwrap_or(false) {
                        return e;
                    }
                }
            }
            assert!(Instant::now() < deadline, "nothing visible at {xpath}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible input whose `<label>` reads `label`.
    pub async fn field(&self, label: &str) -> Element {
        let xpath = format!(
            "//input[@id=//label[normalize-space()={}]/@for]",
            lit(label)
        );
        self.visible(&xpath).await
    }

    /// Types `value` into the field labelled `label` (emptied first).
    pub async fn fill(&self, label: &str, value: &str) {
        let field = self.field(label).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Presses the visible button (or link) whose text is `text`.
    pub async fn press(&self, text: &str) {
        let xpath = format!(
            "//button[normalize-space()={0}] | //a[normalize-space()={0}]",
            lit(text)
        );
        self.visible(&xpath).await.click().await.unwrap();
    }

    /// The text of the visible `role="alert"` element once one shows: the refusal a person
    /// reads. It must hold the focus (so a screen reader reads it) and be a sentence, not a
    /// raw body.
    pub async fn alert(&self) -> String {
        self.settled().await;
        let alert = self.visible("//*[@role='alert']").await;
        let deadline = Instant::now() + WAIT;
        let text = loop {
            let text = alert.text().await.unwrap();
            if !text.trim().is_empty() {
                break text;
            }
            assert!(Instant::now() < deadline, "the alert stayed empty");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let focused = self
            .c
            .execute(
                "return document.activeElement && document.activeElement.getAttribute('role')",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(focused, json!("alert"), "the alert has the focus: {text}");
        assert!(
            !text.contains('{') && !text.contains("_code") && !text.contains("panicked"),
            "a sentence, not a raw answer: {text}"
        );
        text
    }

    /// Waits until the page has no request in flight (the pages disable the button that
    /// sent one until its answer is in).
    pub async fn settled(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let busy = self
                .c
                .execute(
                    "return document.querySelectorAll('button:disabled').length",
                    vec![],
                )
                .await
                .unwrap();
            if busy == json!(0) {
                return;
            }
            assert!(Instant::now() < deadline, "a request never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the page.
    pub async fn text(&self) -> String {
        self.c
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The JSON the echo app answered with (what the protected app received).
    pub async fn app_saw(&self) -> Value {
        let text = self.text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not the app's JSON ({e}): {text}"))
    }

    /// Screenshots of the whole page as it is, 1280 and 360 px wide, into `dir` as
    /// `NAME-1280.png` and `NAME-360.png`; then a check that it fits 320 px, and back to
    /// 1280.
    pub async fn screenshots(&self, dir: &PathBuf, name: &str) {
        std::fs::create_dir_all(dir).unwrap();
        for width in [1280u32, 360] {
            self.c.set_window_size(width, 900).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            // The page's height plus what the window keeps for itself.
            let tall = self
                .c
                .execute(
                    "return document.documentElement.scrollHeight + outerHeight - innerHeight",
                    vec![],
                )
                .await
                .unwrap()
                .as_u64()
                .unwrap_or(900);
            self.c
                .set_window_size(width, (tall as u32).clamp(600, 4000))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            let png = self.c.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
        }
        // Usable at 320 px: nothing wider than the window (no sideways scrolling).
        self.c.set_window_size(320, 900).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fits = self
            .c
            .execute(
                "return document.documentElement.scrollWidth <= innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "{name} is wider than 320 px");
        self.c.set_window_size(1280, 900).await.unwrap();
    }

    /// axe-core's WCAG 2.1 A and AA rules on the page as it is: the violations, each as
    /// `rule: targets`.
    pub async fn axe(&self) -> Vec<String> {
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/node_modules/axe-core/axe.min.js"
        ))
        .expect("axe-core is installed (cd tests/browser && npm install)");
        self.c
            .execute(&format!("{source}\nreturn true;"), vec![])
            .await
            .unwrap();
        let found = self
            .c
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {runOnly: {type: 'tag',
                     values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
                   .then(r => done(r.violations.map(v => v.id + ': ' +
                       v.nodes.map(n => n.target.join(' ')).join(', '))))
                   .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(found).unwrap()
    }

    pub async fn close(self) {
        self.c.close().await.ok();
    }
}
