//! The HTTP listener: the route table on actix-server, built the way actix-web's `HttpServer` builds
//! it, except that every accepted socket is a [`ConnStream`] whose handle goes into the request's
//! connection data, so stream sessions can close their connection at once (see `http::conn`).
//! The connection timers come from `[timeouts]` (`http_*`).

use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Protocol};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::{web, App};
use tokio::net::TcpStream;

use super::conn::{ConnHandle, ConnStream};
use crate::node::Node;

/// Pending connections the kernel may queue before accepting.
const BACKLOG: u32 = 4096;

/// Binds the HTTP service to `listener` and returns the server, ready to be spawned.
pub fn serve(listener: std::net::TcpListener, node: &Node) -> std::io::Result<actix_server::Server> {
    let config = &node.config;
    let t = &config.timeouts;
    let keep_alive = match t.http_keep_alive_ms {
        0 => KeepAlive::Disabled,
        ms => KeepAlive::Timeout(Duration::from_millis(ms)),
    };
    let request_head = Duration::from_millis(t.http_request_head_ms);
    let linger = Duration::from_millis(t.http_linger_ms);
    let builder = actix_server::Server::build()
        .workers(config.workers)
        .backlog(BACKLOG)
        .disable_signals()
        .shutdown_timeout(t.shutdown_grace_ms.div_ceil(1000));
    let shutdown = builder.graceful_shutdown_signal();
    let node = node.clone();
    let server = builder
        .listen("matchd-http", listener, move || {
            let node = node.clone();
            let shutdown = shutdown.clone();
            let app = App::new()
                .wrap(actix_web::middleware::from_fn(super::trace::request_span))
                .wrap(super::cors::Cors::new(&node.config.cors_origins))
                .app_data(web::Data::new(node.clone()))
                .configure(super::configure(&node))
                .into_factory()
                .map_err(|err| err.error_response());
            let http = HttpService::build()
                .keep_alive(keep_alive)
                .client_request_timeout(request_head)
                .client_disconnect_timeout(linger)
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .on_connect_ext(|io: &ConnStream, data| {
                    data.insert::<ConnHandle>(io.handle());
                })
                .finish(map_config(app, |_| AppConfig::default()));
            fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, actix_http::error::DispatchError>((ConnStream::new(io), Protocol::Http1, peer))
            })
            .and_then(http)
        })?
        .run();
    Ok(server)
}
