//! A real browser driven as a person would drive it: headless Chromium, spoken to with the
//! Chrome DevTools Protocol over `--remote-debugging-pipe` (the browser reads commands on its
//! file descriptor 3 and answers on 4, each message JSON ended by a NUL byte). Each
//! [`Tab`] lives in a browser context of its own, with its own cookies: one visitor.
//!
//! Written on the protocol directly rather than with a CDP crate: a test needs five commands,
//! and the crates bring a websocket stack and an async runtime of their own.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::blog::{Chromium, TempFile};

/// One headless Chromium.
pub struct Browser {
    child: Child,
    to: File,
    from: BufReader<File>,
    next_id: u64,
    _profile: TempFile,
}

/// A page of the browser in a context of its own (cookies apart from every other tab's).
pub struct Tab {
    session: String,
}

impl Browser {
    pub fn start(chromium: &Chromium) -> Browser {
        let profile = TempFile::new("chromium-profile");
        let (theirs_from, ours_to): (OwnedFd, OwnedFd) = pipe();
        let (ours_from, theirs_to): (OwnedFd, OwnedFd) = pipe();
        let (read_fd, write_fd) = (theirs_from.as_raw_fd(), theirs_to.as_raw_fd());
        let mut command = Command::new(chromium.binary());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--window-size=1200,1600",
                &format!("--user-data-dir={}", profile.arg()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only fcntl and dup2 are called, both
        // async-signal-safe. Each end is first copied above 4, so that placing one on 3 or 4
        // cannot close the other; dup2's copies are not closed on exec.
        unsafe {
            command.pre_exec(move || {
                let high = [read_fd, write_fd].map(|fd| libc::fcntl(fd, libc::F_DUPFD, 10));
                for (from, to) in high.into_iter().zip([3, 4]) {
                    if from < 0 || libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        drop((theirs_from, theirs_to));
        Browser {
            child,
            to: File::from(ours_to),
            from: BufReader::new(File::from(ours_from)),
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends `method` (to `session`'s page, or to the browser) and waits for its answer,
    /// passing over the events that come before it. A protocol error panics.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("JSON");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let mut buf = Vec::new();
            let n = self
                .from
                .read_until(0, &mut buf)
                .expect("read from chromium");
            assert!(n > 0, "chromium closed its pipe");
            buf.pop();
            let answer: Value = serde_json::from_slice(&buf).expect("a JSON message");
            if answer["id"] == json!(id) {
                return match answer.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(answer["result"].clone()),
                };
            }
        }
    }

    /// A new tab in a browser context of its own: a new visitor, with no cookie yet.
    pub fn visitor(&mut self) -> Tab {
        let context = self.call(None, "Target.createBrowserContext", json!({}));
        let target = self.call(
            None,
            "Target.createTarget",
            json!({ "url": "about:blank", "browserContextId": context["browserContextId"] }),
        );
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        Tab {
            session: attached["sessionId"]
                .as_str()
                .expect("a session")
                .to_owned(),
        }
    }

    /// Evaluates `js` in the tab's page and returns its value (a promise is awaited).
    pub fn eval(&mut self, tab: &Tab, js: &str) -> Value {
        match self.try_eval(tab, js) {
            Ok(value) => value,
            Err(error) => panic!("{js}: {error}"),
        }
    }

    fn try_eval(&mut self, tab: &Tab, js: &str) -> Result<Value, Value> {
        let result = self.try_call(
            Some(&tab.session),
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        )?;
        match result.get("exceptionDetails") {
            Some(details) => Err(details.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Opens `url` in the tab and waits until it has loaded.
    pub fn goto(&mut self, tab: &Tab, url: &str) {
        self.leaving(tab);
        self.call(Some(&tab.session), "Page.navigate", json!({ "url": url }));
        self.arrived(tab);
    }

    /// Runs `js`, which leaves the page (submits a form, say), and waits for the next one.
    pub fn navigate_by(&mut self, tab: &Tab, js: &str) {
        self.leaving(tab);
        self.eval(tab, js);
        self.arrived(tab);
    }

    /// Marks the page being left: a page without the mark is the next one.
    fn leaving(&mut self, tab: &Tab) {
        self.eval(tab, "window.__leaving = true");
    }

    /// Waits (up to 30 s) for a loaded page without the mark of [`leaving`](Self::leaving).
    fn arrived(&mut self, tab: &Tab) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Fails while the old page's context is torn down: ask again.
            let state = self.try_eval(
                tab,
                "window.__leaving === undefined && document.readyState === 'complete'",
            );
            if state == Ok(json!(true)) {
                return;
            }
            assert!(Instant::now() < deadline, "the page did not load in 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Makes the tab's page keep no HTTP cache: every navigation is a full request (no
    /// `If-None-Match`).
    pub fn disable_cache(&mut self, tab: &Tab) {
        self.call(Some(&tab.session), "Network.enable", json!({}));
        self.call(
            Some(&tab.session),
            "Network.setCacheDisabled",
            json!({ "cacheDisabled": true }),
        );
    }

    /// Gives the tab's page a viewport of `width` × `height` CSS pixels.
    pub fn set_viewport(&mut self, tab: &Tab, width: u32, height: u32) {
        self.call(
            Some(&tab.session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }

    /// A PNG, in base64, of the part of the tab's page from `top` to `bottom` (CSS pixels
    /// from the top of the page), across the viewport's width.
    pub fn screenshot(&mut self, tab: &Tab, top: f64, bottom: f64) -> String {
        let width = self.eval(tab, "document.documentElement.clientWidth");
        let shot = self.call(
            Some(&tab.session),
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": top, "width": width, "height": bottom - top, "scale": 1 },
            }),
        );
        shot["data"].as_str().expect("base64 data").to_owned()
    }

    /// The tab's page: its URL and its whole HTML.
    pub fn page(&mut self, tab: &Tab) -> (String, String) {
        let value = self.eval(tab, "[location.href, document.documentElement.outerHTML]");
        let text = |i: usize| value[i].as_str().expect("a string").to_owned();
        (text(0), text(1))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipe: its read end, then its write end, both closed on exec (the child's copies are made
/// by `dup2`, which clears that flag).
fn pipe() -> (OwnedFd, OwnedFd) {
    let (read, write) = std::io::pipe().expect("pipe");
    (read.into(), write.into())
}
