vcl 4.1;

# The blog behind Varnish (issue 24, in progress): Varnish keeps what the blog's responses let
# a shared cache keep (today none: every page is `Cache-Control: private`, since every page
# shows who is looking), and purges by tag: a `PURGE` from loopback with an `xkey-purge` header
# drops every object whose `xkey` header names one of its tags (vmod xkey, Debian's
# varnish-modules). The backend is the blog on its default port; the test harness
# (src/varnish.rs) points `.port = "8000"` at the blog it started.

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

sub vcl_deliver {
    # Whether Varnish answered without the backend: what the tests count.
    if (obj.hits > 0) {
        set resp.http.x-varnish-cache = "hit";
    } else {
        set resp.http.x-varnish-cache = "miss";
    }
}
