//! The Varnish harness itself (src/varnish.rs) with the repository's VCL
//! (examples/blog/varnish.vcl), in front of a small HTTP server of the test's own that counts
//! what reaches it: Varnish keeps what the server lets it, a `PURGE` by `xkey` tag drops exactly
//! the objects with that tag, only from loopback and only with a tag, it keeps nothing past its
//! `cachesweeper-store-by`, a paused Varnish answers nothing until resumed, and nothing is left
//! behind.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cachesweeper_suite::varnish::VarnishProcess;

/// A server that answers every `GET /PATH` with `PATH <n>` (`n` counting its requests),
/// cacheable for a minute by a shared cache and tagged with the path's words.
fn origin() -> (u16, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // The rest of the head.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!("{path} {n}");
            let tags = path.trim_start_matches('/').replace('-', " ");
            // By when it must be stored: long ago, unreadable, or (for any other path) never said.
            let store_by = match path.split('-').next() {
                Some("/late") => "cachesweeper-store-by: 1000000000.000\r\n",
                Some("/garbled") => "cachesweeper-store-by: soon\r\n",
                _ => "",
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nCache-Control: public, max-age=60\r\n\
                 xkey: {tags}\r\n{store_by}Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, served)
}

fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .allow_non_standard_methods(true)
        .build()
        .into();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut response = agent
        .run(builder.body(()).unwrap())
        .map_err(|e| e.to_string())?;
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((response.status().as_u16(), body))
}

fn get(url: &str) -> String {
    let (status, body) = request("GET", url, &[]).unwrap();
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

#[test]
fn varnish_keeps_purges_by_tag_pauses_and_goes() {
    let (port, served) = origin();
    let vcl = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/blog/varnish.vcl");
    let Some(varnish) = VarnishProcess::start(&vcl, port) else {
        return;
    };
    let url = |path: &str| format!("{}{path}", varnish.url());

    // Kept: the second request of each page never reaches the server.
    assert_eq!(get(&url("/a-b")), "/a-b 1");
    assert_eq!(get(&url("/b-c")), "/b-c 2");
    assert_eq!(get(&url("/a-b")), "/a-b 1");
    assert_eq!(get(&url("/b-c")), "/b-c 2");
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // A purge by tag drops the objects with it, and only those.
    // Varnish's synthetic answer names how many objects went ("Purged N").
    let purged = |tags: &str| {
        let (status, body) = request("PURGE", &url("/"), &[("xkey-purge", tags)]).unwrap();
        assert_eq!(status, 200, "{body}");
        (0..10)
            .find(|n| body.contains(&format!("Purged {n}<")))
            .unwrap_or_else(|| panic!("no count in {body}"))
    };
    assert_eq!(purged("c"), 1);
    assert_eq!(get(&url("/a-b")), "/a-b 1");
    assert_eq!(get(&url("/b-c")), "/b-c 3");
    // Several tags at once; a tag nothing has.
    assert_eq!(purged("a zzz"), 1);
    assert_eq!(get(&url("/a-b")), "/a-b 4");
    assert_eq!(purged("zzz"), 0);
    // A purge must name tags.
    assert_eq!(request("PURGE", &url("/"), &[]).unwrap().0, 400);

    // A response to be stored by a time gone by, or one that does not read as a time, is
    // answered and not kept.
    assert_eq!(get(&url("/late-x")), "/late-x 5");
    assert_eq!(get(&url("/late-x")), "/late-x 6");
    assert_eq!(get(&url("/garbled-x")), "/garbled-x 7");
    assert_eq!(get(&url("/garbled-x")), "/garbled-x 8");
    assert_eq!(get(&url("/a-b")), "/a-b 4");

    // Paused, it answers nothing; resumed, it answers from what it kept.
    varnish.pause();
    assert!(
        request("GET", &url("/a-b"), &[]).is_err(),
        "a paused Varnish answered"
    );
    varnish.resume();
    assert_eq!(get(&url("/a-b")), "/a-b 4");

    // Dropped, it is gone: its port refuses.
    let port = varnish.port();
    drop(varnish);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
