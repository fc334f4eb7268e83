//! The fake apiserver over HTTP/1.1 on a TCP listener (so a benchmark can run it in another
//! process than the operator; a kube `Client` reaches it with an `http://127.0.0.1:<port>`
//! `Config`).

use std::convert::Infallible;

use ::http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::FakeApiServer;

/// Serves `server` on `listener` until `stop` becomes true.
pub async fn serve(
    server: FakeApiServer,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let server = server.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Ok::<_, Infallible>(server.handle(&parts, &bytes))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
