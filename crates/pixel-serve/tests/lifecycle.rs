//! The server under pressure on loopback: a full queue answers 503, a client that hangs up stops its
//! generation, a request past its deadline gets 504, a failing request leaves the others in its batch
//! alone, and shutdown drains admitted requests while refusing new ones.

mod common;

use std::time::Duration;

use common::{EventReader, TestServer, config, post, raw_body};
use pixel_serve::{DEFAULT_RAW_MODEL, ServeConfig};
use serde_json::Value;

/// Tokens of a request long enough to be caught while running (~1 ms a token on the tiny model).
const LONG: usize = 3000;

fn long_stream() -> Value {
    let mut body = raw_body(DEFAULT_RAW_MODEL, "Tell a long story.", LONG);
    body["stream"] = true.into();
    body
}

/// Opens a long streaming request and waits until text arrives.
fn running_stream(server: &TestServer) -> EventReader {
    let mut events = EventReader::open(server, &long_stream());
    assert_eq!(events.status, 200);
    let role = events.next_event().expect("role chunk");
    assert!(role.contains("\"role\":\"assistant\""), "{role}");
    events.next_event().expect("a content chunk");
    events
}

fn long_config() -> ServeConfig {
    ServeConfig {
        max_tokens: LONG,
        ..config()
    }
}

#[test]
fn full_queue_answers_503_and_takes_requests_again_once_drained() {
    let server = TestServer::start(ServeConfig {
        max_pending: 2,
        max_batch: 1,
        max_n: 1,
        ..long_config()
    });
    let running = running_stream(&server);
    std::thread::scope(|s| {
        let queued = s.spawn(|| post(&server, &raw_body(DEFAULT_RAW_MODEL, "hi", 4)));
        server.wait_for(Duration::from_secs(10), "a queued request", |s| {
            s.queued == 1
        });
        let (status, answer) = post(&server, &raw_body(DEFAULT_RAW_MODEL, "hi", 4));
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["type"], "overloaded_error");
        assert_eq!(server.stats().rejected_busy, 1);
        running.close();
        let (status, answer) = queued.join().unwrap();
        assert_eq!(
            status, 200,
            "the queued request runs once the slot frees: {answer}"
        );
    });
    let (status, _) = post(&server, &raw_body(DEFAULT_RAW_MODEL, "hi", 4));
    assert_eq!(status, 200);
}

#[test]
fn client_hanging_up_a_stream_stops_its_generation() {
    let server = TestServer::start(long_config());
    let events = running_stream(&server);
    events.close();
    server.wait_for(Duration::from_secs(10), "the job stopped", |s| {
        s.abandoned == 1 && s.cancelled == 1 && s.running == 0
    });
    let generated = server.stats().generated_tokens;
    assert!(
        generated < LONG as u64 / 2,
        "stopped early: {generated} tokens"
    );
}

#[test]
fn client_hanging_up_while_waiting_for_a_whole_answer_stops_its_generation() {
    let server = TestServer::start(long_config());
    let body =
        serde_json::to_vec(&raw_body(DEFAULT_RAW_MODEL, "Tell a long story.", LONG)).unwrap();
    let mut socket = std::net::TcpStream::connect(server.addr).unwrap();
    use std::io::Write;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(&body).unwrap();
    server.wait_for(Duration::from_secs(10), "generation", |s| {
        s.generated_tokens > 0
    });
    drop(socket);
    server.wait_for(Duration::from_secs(10), "the job stopped", |s| {
        s.abandoned == 1 && s.cancelled == 1 && s.running == 0
    });
    assert!(server.stats().generated_tokens < LONG as u64 / 2);
}

#[test]
fn request_past_its_deadline_gets_504_and_stops() {
    let server = TestServer::start(ServeConfig {
        request_timeout: Duration::from_millis(300),
        ..long_config()
    });
    let (status, answer) = post(
        &server,
        &raw_body(DEFAULT_RAW_MODEL, "Tell a long story.", LONG),
    );
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["error"]["type"], "timeout_error");
    let events = EventReader::open(&server, &long_stream()).rest();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["type"], "timeout_error", "{events:?}");
    server.wait_for(Duration::from_secs(10), "both stopped", |s| {
        s.timed_out == 2 && s.abandoned == 2 && s.running == 0
    });
}

#[test]
fn a_failing_request_leaves_the_others_of_its_batch_alone() {
    let good = raw_body(DEFAULT_RAW_MODEL, "Describe the picture.", 300);
    let (_, alone) = post(&TestServer::start(long_config()), &good);
    // A long window, so that both requests meet in one batch even on a loaded machine.
    let server = TestServer::start(ServeConfig {
        batch_window: Duration::from_secs(1),
        ..long_config()
    });
    let before = server.stats().batches;
    std::thread::scope(|s| {
        let together = s.spawn(|| post(&server, &good));
        // Joins the same batch, then its client hangs up.
        let mut events = EventReader::open(&server, &long_stream());
        events.next_event().expect("role chunk");
        events.next_event().expect("a content chunk");
        events.close();
        // A malformed request at the same time never reaches the model.
        let (status, _) = common::post_bytes(&server, "/v1/chat/completions", b"{".to_vec());
        assert_eq!(status, 400);
        let (status, answer) = together.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            answer["choices"][0]["message"],
            alone["choices"][0]["message"]
        );
    });
    server.wait_for(Duration::from_secs(10), "the hung-up row stopped", |s| {
        s.abandoned == 1 && s.running == 0
    });
    let stats = server.stats();
    assert_eq!(
        stats.batches - before,
        1,
        "both ran in one batch: {stats:?}"
    );
}

#[test]
fn shutdown_finishes_admitted_requests_and_refuses_new_ones() {
    let mut server = TestServer::start(long_config());
    let trigger = server.take_trigger();
    std::thread::scope(|s| {
        let server = &server;
        let body = raw_body(DEFAULT_RAW_MODEL, "Tell a long story.", 1500);
        let in_flight = s.spawn(move || post(server, &body));
        server.wait_for(Duration::from_secs(10), "generation", |s| {
            s.generated_tokens > 0
        });
        let _ = trigger.send(());
        // New work is refused: no connection, or 503.
        let refused = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            match std::net::TcpStream::connect(server.addr) {
                Err(_) => true,
                Ok(_) => common::post_socket(server, b"{}").0 == 503,
            }
        });
        assert!(refused, "new requests are refused once shutting down");
        assert!(
            server.stats().running == 1,
            "refused while the admitted one still runs"
        );
        let (status, answer) = in_flight.join().unwrap();
        assert_eq!(status, 200, "the admitted request finished: {answer}");
        let tokens = answer["usage"]["completion_tokens"].as_u64().unwrap();
        let finish = &answer["choices"][0]["finish_reason"];
        assert!(tokens == 1500 || finish == "stop", "{answer}");
    });
    server.shutdown().expect("serve returned cleanly");
}
