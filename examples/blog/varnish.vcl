vcl 4.1;

# The blog behind Varnish: Varnish keeps what the blog's responses let a shared cache keep (the
# pages of a visitor without a cookie, `Cache-Control: public, s-maxage=...`; Varnish's built-in
# rules pass every request with a cookie and keep no response marked private or no-store), and
# purges by tag: a `PURGE` from loopback with an `xkey-purge` header drops every object whose
# `xkey` header names one of its tags (vmod xkey, Debian's varnish-modules). The blog purges
# the tags of every record it invalidates, twice (cachesweeper's `HttpCaches::settle` apart),
# and says by when each page must be stored (`cachesweeper-store-by`): a page later than that
# may have been checked before a write whose purges are both gone by, so it is not kept.
#
# The backend is the blog on its default port; the test harness (src/varnish.rs) and
# scripts/blog-varnish.sh point `.port = "8000"` at the blog they start.

import std;
import xkey;

backend blog {
    .host = "127.0.0.1";
    .port = "8000";
}

acl purgers {
    "127.0.0.1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "No xkey-purge header"));
        }
        set req.http.n-gone = xkey.purge(req.http.xkey-purge);
        return (synth(200, "Purged " + req.http.n-gone));
    }
}

sub vcl_backend_response {
    # Checked here, where the object is about to be stored: with streaming on (Varnish's
    # default, kept), it is stored (and indexed by xkey) as soon as this returns, before its
    # body arrives. A time that does not parse counts as past.
    if (beresp.http.cachesweeper-store-by &&
        std.time(beresp.http.cachesweeper-store-by, now - 1s) < now) {
        # Too late: answer it, keep nothing (and remember not to wait for it, as Varnish's
        # built-in rules do for any response they must not keep).
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
        return (deliver);
    }
}

sub vcl_deliver {
    # Whether Varnish answered without the backend: what the tests count.
    if (obj.hits > 0) {
        set resp.http.x-varnish-cache = "hit";
    } else {
        set resp.http.x-varnish-cache = "miss";
    }
}
