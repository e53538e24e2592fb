//! The teacher narrator against a real HTTP server on loopback: success, server errors, bad bodies, timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pixel_traces::datasets::NeedleConfig;
use pixel_traces::narrator::{Modality, NarrationRequest, NarrationStep, Narrator};
use pixel_traces::{Error, SynthConfig, Synthesizer, TeacherConfig, TeacherNarrator};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What the server does with each request.
#[derive(Clone)]
enum Reply {
    Status(u16, String),
    Sleep(Duration),
}

/// Serves `replies` in order (the last one repeats), sending each request's (path, headers, body) back.
fn serve(replies: Vec<Reply>) -> (String, mpsc::Receiver<(String, String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let reply = replies[i.min(replies.len() - 1)].clone();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                headers.push_str(&line);
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let _ = tx.send((path, headers, String::from_utf8(body).unwrap()));
            match reply {
                Reply::Status(code, body) => {
                    let response = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes());
                }
                Reply::Sleep(d) => thread::sleep(d),
            }
        }
    });
    (format!("http://{addr}"), rx)
}

fn completion(text: &str) -> String {
    serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).to_string()
}

fn request<'a>(image: &'a image::RgbImage) -> NarrationRequest<'a> {
    NarrationRequest {
        step: NarrationStep::WholeInput,
        modality: Modality::Image,
        question: "What digit?",
        answer: "B",
        cue: "the red tag",
        images: vec![image],
    }
}

#[test]
fn a_completion_becomes_the_analysis_and_the_request_is_openai_shaped() {
    let (url, rx) = serve(vec![Reply::Status(
        200,
        completion("  I see a cluttered scene.  "),
    )]);
    let mut config = TeacherConfig::new(format!("{url}/v1/"), "teacher-model");
    config.api_key = Some("k123".into());
    let teacher = TeacherNarrator::new(config);
    let image = image::RgbImage::from_pixel(40, 30, image::Rgb([10, 200, 30]));
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let text = teacher.narrate(&request(&image), &mut rng).unwrap();
    assert_eq!(text, "I see a cluttered scene.");
    let (path, headers, body) = rx.recv().unwrap();
    assert_eq!(path, "/v1/chat/completions");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("authorization: bearer k123")
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["model"], "teacher-model");
    assert_eq!(body["messages"][0]["role"], "system");
    let content = body["messages"][1]["content"].as_array().unwrap();
    assert!(content[0]["text"].as_str().unwrap().contains("the red tag"));
    assert!(
        content[1]["image_url"]["url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,iVBORw0KGgo")
    );
}

#[test]
fn server_errors_bad_bodies_and_timeouts_are_typed() {
    let image = image::RgbImage::new(8, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (url, _rx) = serve(vec![Reply::Status(
        503,
        "{\"error\": \"overloaded\"}".into(),
    )]);
    let err = TeacherNarrator::new(TeacherConfig::new(&url, "m"))
        .narrate(&request(&image), &mut rng)
        .unwrap_err();
    assert!(
        matches!(&err, Error::TeacherStatus { status: 503, body, .. } if body.contains("overloaded")),
        "{err}"
    );

    let (url, _rx) = serve(vec![
        Reply::Status(200, "not json".into()),
        Reply::Status(200, "{\"choices\": []}".into()),
        Reply::Status(200, completion("   ")),
    ]);
    let teacher = TeacherNarrator::new(TeacherConfig::new(&url, "m"));
    for _ in 0..3 {
        let err = teacher.narrate(&request(&image), &mut rng).unwrap_err();
        assert!(matches!(err, Error::TeacherResponse { .. }), "{err}");
    }

    let (url, _rx) = serve(vec![Reply::Sleep(Duration::from_secs(3))]);
    let mut config = TeacherConfig::new(&url, "m");
    config.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = TeacherNarrator::new(config)
        .narrate(&request(&image), &mut rng)
        .unwrap_err();
    assert!(matches!(err, Error::TeacherTimeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Nothing listening: a transport error, not a panic.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = TeacherNarrator::new(TeacherConfig::new(format!("http://{closed}"), "m"))
        .narrate(&request(&image), &mut rng)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TeacherTransport { .. } | Error::TeacherTimeout { .. }
        ),
        "{err}"
    );
}

#[test]
fn a_whole_trace_can_be_narrated_by_the_teacher() {
    let (url, rx) = serve(vec![Reply::Status(200, completion("Teacher analysis."))]);
    let mut config = TeacherConfig::new(&url, "m");
    config.send_images = false;
    let synth = Synthesizer::new(SynthConfig::default(), TeacherNarrator::new(config));
    let data = NeedleConfig {
        width: 448,
        height: 336,
        glyph_min: 10,
        glyph_max: 12,
        clutter: 10,
        ..NeedleConfig::default()
    };
    let sample = data.generate(0, 0).unwrap().sample;
    let made = synth
        .synthesize_as(&sample, 0, pixel_traces::Variant::OneWrong)
        .unwrap();
    let trained = made.trace.trained_text();
    assert_eq!(trained.matches("Teacher analysis.").count(), 3, "{trained}");
    assert!(trained.contains(&format!("\\boxed{{{}}}", sample.answer)));
    let steps: Vec<String> = rx.try_iter().map(|(_, _, body)| body).collect();
    assert_eq!(steps.len(), 3);
    assert!(steps[1].contains("missed"), "{}", steps[1]);
    assert!(!steps[0].contains("image_url"));
}
