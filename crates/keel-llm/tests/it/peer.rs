//! A real chat-completions server on loopback for the remote generator to talk to. It is the
//! peer, not the system under test: it follows a script (fail with a status, stall, answer)
//! and records what it received.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Step {
    /// Answer with this status and an error body (and `Retry-After` seconds if given).
    Fail(u16, Option<u32>),
    /// Answer 429 with this `Retry-After` value, verbatim (hostile or odd ones included).
    Throttle(String),
    /// Wait this long before answering normally (to trip the client's timeout).
    Stall(Duration),
    /// Answer normally.
    Answer,
    /// Answer with this text.
    Say(String),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

pub struct Peer {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    /// Serves `script` in order, then answers every further request normally.
    pub fn start(script: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rx, st) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut script = script.into_iter();
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let step = script.next().unwrap_or(Step::Answer);
                // One thread per connection, so a stalled answer does not block the next try.
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || serve(conn, step, &rx));
            }
        });
        Self { addr, received, stop, thread: Some(thread) }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, step: Step, received: &Mutex<Vec<Received>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return; // the wake-up connection
    }
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let question = body["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or("");
    let reply = format!("remote reply to: {}", question.chars().take(40).collect::<String>());
    received.lock().unwrap().push(Received { authorization, body });
    let mut conn = conn;
    let (status, extra, payload) = match step {
        Step::Fail(status, retry_after) => (
            status,
            retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default(),
            serde_json::json!({"error": {"message": "scripted failure", "type": "server_error"}}).to_string(),
        ),
        Step::Throttle(value) => (
            429,
            format!("Retry-After: {value}\r\n"),
            serde_json::json!({"error": {"message": "slow down", "type": "rate_limit"}}).to_string(),
        ),
        Step::Stall(d) => {
            std::thread::sleep(d);
            (200, String::new(), answer(&reply))
        }
        Step::Answer => (200, String::new(), answer(&reply)),
        Step::Say(text) => (200, String::new(), answer(&text)),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{payload}",
        payload.len()
    );
    let _ = conn.flush();
}

fn answer(text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-peer", "object": "chat.completion", "model": "peer-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    })
    .to_string()
}
