//! `KvsServer` and `KvsClient` used as a library, in one process.

use std::net::TcpListener;
use std::thread;

use kvs::thread_pool::{RayonThreadPool, SharedQueueThreadPool, ThreadPool};
use kvs::{KvStore, KvsClient, KvsEngine, KvsError, KvsServer, ServerConfig, SledKvsEngine};
use tempfile::TempDir;

fn serve_then_shut_down<E: KvsEngine, P: ThreadPool>(engine: E, pool: P) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = KvsServer::with_config(engine, pool, ServerConfig::default().workers(2));
    let stop = server.shutdown_handle();
    let running = thread::spawn(move || server.serve(listener));

    let mut client = KvsClient::connect(addr).unwrap();
    client.set("a".to_owned(), "1".to_owned()).unwrap();
    assert_eq!(client.get("a".to_owned()).unwrap().as_deref(), Some("1"));
    assert!(matches!(
        client.remove("b".to_owned()),
        Err(KvsError::KeyNotFound)
    ));

    stop.shutdown();
    running.join().unwrap().unwrap();
    assert!(stop.is_shutdown());
    // Stopped: the listener is closed and the open connection was closed.
    assert!(matches!(
        KvsClient::connect(addr),
        Err(KvsError::Connect { .. })
    ));
    assert!(client.get("a".to_owned()).is_err());
}

#[test]
fn shutdown_handle_stops_a_kvs_store_server() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    serve_then_shut_down(store.clone(), SharedQueueThreadPool::new(2).unwrap());
    // The engine was flushed and is still usable by its owner.
    assert_eq!(store.get("a".to_owned()).unwrap().as_deref(), Some("1"));
}

#[test]
fn shutdown_handle_stops_a_sled_server() {
    let dir = TempDir::new().unwrap();
    let engine = SledKvsEngine::new(sled::open(dir.path()).unwrap()).unwrap();
    serve_then_shut_down(engine.clone(), RayonThreadPool::new(2).unwrap());
    assert_eq!(engine.get("a".to_owned()).unwrap().as_deref(), Some("1"));
}

#[test]
fn shutdown_before_run_returns_at_once() {
    let dir = TempDir::new().unwrap();
    let server = KvsServer::new(
        KvStore::open(dir.path()).unwrap(),
        SharedQueueThreadPool::new(1).unwrap(),
    );
    server.shutdown_handle().shutdown();
    server.run("127.0.0.1:0").unwrap();
}

#[test]
fn a_pool_smaller_than_the_worker_count_still_serves_and_stops() {
    let dir = TempDir::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = KvsServer::with_config(
        KvStore::open(dir.path()).unwrap(),
        SharedQueueThreadPool::new(1).unwrap(),
        ServerConfig::default().workers(4),
    );
    let stop = server.shutdown_handle();
    let running = thread::spawn(move || server.serve(listener));
    let clients: Vec<KvsClient> = (0..8).map(|_| KvsClient::connect(addr).unwrap()).collect();
    for (i, mut client) in clients.into_iter().enumerate() {
        client.set(format!("k{i}"), "v".to_owned()).unwrap();
    }
    stop.shutdown();
    running.join().unwrap().unwrap();
}
