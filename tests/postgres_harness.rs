//! The PostgreSQL harness itself (src/postgres.rs): a fresh server, SQL through psql, a
//! committed row that survives a clean restart and a crash, and no server left behind.

use cachesweeper_suite::postgres::PostgresProcess;

#[test]
fn committed_rows_survive_restarts_and_the_server_goes_with_the_harness() {
    let Some(mut server) = PostgresProcess::start() else {
        return;
    };
    server.create_database("harness");
    assert_eq!(
        server.url("harness"),
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=harness",
            server.port()
        )
    );
    server.psql(
        "harness",
        "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);
         INSERT INTO notes VALUES (1, 'kept');",
    );
    let select = "SELECT id, body FROM notes ORDER BY id";
    assert_eq!(server.psql("harness", select), "1|kept");

    let port = server.port();
    let first = server.pid();
    server.restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), first);
    assert_eq!(server.psql("harness", select), "1|kept");

    // Committed just before the crash: synchronous_commit is on, so it is in the WAL.
    server.psql(
        "harness",
        "INSERT INTO notes VALUES (2, 'committed before the crash')",
    );
    let second = server.pid();
    server.crash_restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), second);
    assert_eq!(
        server.psql("harness", select),
        "1|kept\n2|committed before the crash"
    );

    let pid = server.pid();
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the postmaster ({pid}) outlived its harness"
    );
}
