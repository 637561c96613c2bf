//! Bodies streamed between async HTTP and the blocking store, in constant memory whatever
//! their size: an upload is handed over chunk by chunk through a small queue to a reader the
//! store reads on a blocking thread; a download is read on a blocking thread into the
//! response the same way.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use tokio::sync::mpsc;

/// Chunks in flight between the two sides.
const QUEUE: usize = 4;
/// The size of a download's chunks.
const CHUNK: usize = 64 * 1024;

type Chunk = std::io::Result<Bytes>;

/// A blocking reader over the chunks an async task sends.
#[derive(Debug)]
pub(crate) struct ChannelReader {
    chunks: mpsc::Receiver<Chunk>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A sender for the async side and the reader for the blocking side. Dropping the reader
/// (the store refused the upload before reading it all) makes the next send fail.
pub(crate) fn upload() -> (mpsc::Sender<Chunk>, ChannelReader) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (tx, ChannelReader { chunks: rx, current: Bytes::new() })
}

/// Sends a request body into `tx` until it ends, the reader stops reading, or it fails.
pub(crate) async fn pump(body: Body, tx: mpsc::Sender<Chunk>) {
    use http_body_util::BodyExt;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let chunk = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue, // trailers
            },
            Err(e) => Err(std::io::Error::other(format!("the upload was cut off: {e}"))),
        };
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// The response body of `len` bytes of `reader` after skipping `skip`. When the whole
/// content is sent (`whole`), the reader is read to its end first — where a blob reader
/// checks the content against its hash — and the last chunk is held back until then: a blob
/// that fails its check ends the response short, with an error, instead of completing it.
pub(crate) fn download(mut reader: Box<dyn Read + Send>, skip: u64, len: u64, whole: bool) -> Body {
    let (tx, rx) = mpsc::channel::<Chunk>(QUEUE);
    tokio::task::spawn_blocking(move || {
        let send = |chunk: Chunk| tx.blocking_send(chunk).is_ok();
        if skip > 0 {
            if let Err(e) = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink()) {
                send(Err(e));
                return;
            }
        }
        let mut left = len;
        let mut held: Option<Bytes> = None;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let want = if whole { CHUNK } else { CHUNK.min(left as usize) };
            if want == 0 {
                break;
            }
            match reader.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => {
                    left = left.saturating_sub(n as u64);
                    if let Some(previous) = held.replace(Bytes::copy_from_slice(&buf[..n])) {
                        if !send(Ok(previous)) {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(error = %e, "a download failed");
                    send(Err(e));
                    return;
                }
            }
        }
        if let Some(last) = held {
            send(Ok(last));
        }
    });
    Body::from_stream(Chunks(rx))
}

/// The response body `write` writes on a blocking thread. A failure ends the body short
/// with an error, so the client cannot take a cut-off stream for a whole one.
pub(crate) fn written(write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static) -> Body {
    let (tx, rx) = mpsc::channel::<Chunk>(QUEUE);
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(CHUNK, ChannelWriter(tx.clone()));
        let done = write(&mut out).and_then(|()| std::io::Write::flush(&mut out));
        if let Err(e) = done {
            tracing::error!(error = %e, "a streamed answer failed");
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(Chunks(rx))
}

/// Writes become chunks of a response body.
struct ChannelWriter(mpsc::Sender<Chunk>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The receiving end of a download as a stream of chunks.
struct Chunks(mpsc::Receiver<Chunk>);

impl futures_core::Stream for Chunks {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_upload_reaches_the_blocking_reader_whole_and_in_order() {
        let (tx, mut reader) = upload();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let body = Body::from(data.clone());
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        });
        pump(body, tx).await;
        assert_eq!(read.await.expect("join").expect("read"), data);
    }

    #[tokio::test]
    async fn a_download_sends_the_range_asked_for_and_ends_short_on_a_failed_check() {
        use http_body_util::BodyExt;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let part = download(Box::new(std::io::Cursor::new(data.clone())), 1_000, 70_000, false);
        let got = part.collect().await.expect("body").to_bytes();
        assert_eq!(&got[..], &data[1_000..71_000]);

        /// Reads its content, then fails where a blob reader's hash check would.
        struct FailsAtEnd(std::io::Cursor<Vec<u8>>);
        impl Read for FailsAtEnd {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match self.0.read(buf)? {
                    0 => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "hash mismatch")),
                    n => Ok(n),
                }
            }
        }
        let whole = download(Box::new(FailsAtEnd(std::io::Cursor::new(data.clone()))), 0, data.len() as u64, true);
        let mut body = whole;
        let mut received = 0;
        let mut failed = false;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => received += frame.into_data().map(|d| d.len()).unwrap_or(0),
                Err(_) => failed = true,
            }
        }
        assert!(failed, "the stream ends with an error");
        assert!(received < data.len(), "the last chunk is held back: {received} of {}", data.len());
    }
}
