//! A small WebDriver client for the console's browser tests: Debian's
//! `chromedriver` on a free port, driving Debian's `chromium` headless.
//! Nothing is downloaded; without the two packages the tests fail saying
//! what to install. Every screenshot goes under
//! `target/console-screenshots/`, and a wait that times out takes one first.

#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Where screenshots go.
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
}

/// A headless Chromium under a chromedriver of its own.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: Client<HttpConnector, Full<Bytes>>,
    /// Names this test's screenshots.
    test: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser session for `test`.
    pub async fn start(test: &str) -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        );
        let port = herald_storage::testing::free_port();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that the browser it starts goes with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http: Client::builder(TokioExecutor::new()).build_http(),
            test: test.to_owned(),
            _profile: profile,
        };
        let ready = async {
            loop {
                if let Ok(status) = browser.request("GET", "/status", None).await
                    && status["ready"] == true
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .expect("chromedriver ready within 20 s");
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,860",
                        format!("--user-data-dir={}", browser._profile.path().display()),
                    ],
                },
            }}
        });
        let session = browser
            .request("POST", "/session", Some(capabilities))
            .await
            .expect("a browser session");
        browser.session = session["sessionId"].as_str().expect("sessionId").to_owned();
        browser
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if ok {
            Ok(value["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                value["value"]["error"], value["value"]["message"]
            ))
        }
    }

    /// A call within this session.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        self.request(method, &path, body).await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .await
            .expect("navigate");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the first element matching `css` (None: no such element).
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([css]),
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// Whether an element matching `css` is shown (present and not hidden).
    pub async fn visible(&self, css: &str) -> bool {
        self.execute(
            "const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null;",
            json!([css]),
        )
        .await
            == true
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        match found {
            Ok(element) => element
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                .expect("an element reference")
                .to_owned(),
            Err(err) => {
                self.fail(&format!("no element {css}: {err}")).await;
                unreachable!()
            }
        }
    }

    /// Clicks the first element matching `css`, as a user would.
    pub async fn click(&self, css: &str) {
        let element = self.element(css).await;
        if let Err(err) = self
            .call(
                "POST",
                &format!("/element/{element}/click"),
                Some(json!({})),
            )
            .await
        {
            self.fail(&format!("cannot click {css}: {err}")).await;
        }
    }

    /// Replaces the value of the input `css` by typing `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        let _ = self
            .call(
                "POST",
                &format!("/element/{element}/clear"),
                Some(json!({})),
            )
            .await;
        if let Err(err) = self
            .call(
                "POST",
                &format!("/element/{element}/value"),
                Some(json!({ "text": text })),
            )
            .await
        {
            self.fail(&format!("cannot type into {css}: {err}")).await;
        }
    }

    /// The text of an open alert dialog, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        self.call("GET", "/alert/text", None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
    }

    /// Polls `script` (returning a value) until it gives something truthy,
    /// for at most `limit`; then screenshots and fails with `what`.
    pub async fn wait_for(&self, limit: Duration, what: &str, script: &str, args: Value) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let value = self.execute(script, args.clone()).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                self.fail(&format!("timed out after {limit:?} waiting for {what}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Saves a screenshot of the page as `{test}-{name}.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self
            .call("GET", "/screenshot", None)
            .await
            .expect("screenshot");
        let png = STANDARD
            .decode(data.as_str().expect("base64"))
            .expect("PNG bytes");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Screenshots the page and panics with `message` and where the picture is.
    pub async fn fail(&self, message: &str) {
        let path = self.screenshot("failure").await;
        let notice = self.text("#notice").await.unwrap_or_default();
        panic!(
            "{message} (page notice: {notice:?}; screenshot: {})",
            path.display()
        );
    }

    /// Ends the session and the driver.
    pub async fn quit(self) {
        let _ = self.call("DELETE", "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browser it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
