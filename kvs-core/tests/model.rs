//! Random sequences of set/get/remove run against each engine and a `BTreeMap`; after every
//! step, and across reopens and compactions, the engine must agree with the map.

mod support;

use std::collections::BTreeMap;

use kvs::{AnyEngine, EngineKind, KvStore, KvStoreOptions, KvsEngine, KvsError};
use tempfile::TempDir;

use support::Rng;

fn check_all(engine: &impl KvsEngine, model: &BTreeMap<Vec<u8>, Vec<u8>>, context: &str) {
    assert_eq!(engine.len().unwrap(), model.len(), "{context}: len");
    let mut keys = engine.keys().unwrap();
    keys.sort();
    assert_eq!(
        keys,
        model.keys().cloned().collect::<Vec<_>>(),
        "{context}: keys"
    );
    for (k, v) in model {
        assert_eq!(
            engine.get_bytes(k).unwrap().as_ref(),
            Some(v),
            "{context}: {k:?}"
        );
    }
}

fn run_model(kind: EngineKind, seed: u64, steps: usize) {
    let dir = TempDir::new().unwrap();
    let options = KvStoreOptions::default().compaction_min_stale(4 << 10);
    let open = || AnyEngine::open_with(dir.path(), Some(kind), options.clone()).unwrap();
    let mut engine = open();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng(seed);
    for step in 0..steps {
        let context = format!("seed {seed} step {step}");
        // A small key space, so that overwrites and removes of existing keys are common.
        let key = format!("key{}", rng.below(64)).into_bytes();
        match rng.below(100) {
            0..=44 => {
                let len = rng.below(301) as usize;
                let value = rng.bytes(len);
                engine.set_bytes(&key, &value).unwrap();
                model.insert(key, value);
            }
            45..=74 => {
                assert_eq!(
                    engine.get_bytes(&key).unwrap().as_ref(),
                    model.get(&key),
                    "{context}"
                );
            }
            75..=94 => match (engine.remove_bytes(&key), model.remove(&key)) {
                (Ok(()), Some(_)) | (Err(KvsError::KeyNotFound), None) => {}
                (result, expected) => {
                    panic!("{context}: remove gave {result:?}, model had {expected:?}")
                }
            },
            95..=97 => {
                drop(engine);
                engine = open();
                check_all(&engine, &model, &context);
            }
            _ => {
                if let AnyEngine::Kvs(store) = &engine {
                    store.compact().unwrap();
                }
                check_all(&engine, &model, &context);
            }
        }
    }
    check_all(&engine, &model, "end");
    drop(engine);
    check_all(&open(), &model, "final reopen");
}

#[test]
fn kv_store_agrees_with_a_btreemap_on_random_operations() {
    for seed in 1..=6u64 {
        run_model(
            EngineKind::Kvs,
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            2_000,
        );
    }
}

#[test]
fn sled_agrees_with_a_btreemap_on_random_operations() {
    for seed in 1..=2u64 {
        run_model(
            EngineKind::Sled,
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            600,
        );
    }
}

#[test]
fn kv_store_with_background_compaction_agrees_with_a_btreemap() {
    // Many overwrites of few keys with a tiny threshold: the background compactor runs often
    // while the sequence goes on.
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(
        dir.path(),
        KvStoreOptions::default().compaction_min_stale(1 << 10),
    )
    .unwrap();
    let mut model = BTreeMap::new();
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let key = format!("k{}", rng.below(16)).into_bytes();
        if rng.below(10) == 0 {
            let _ = store.remove_bytes(&key);
            model.remove(&key);
        } else {
            let len = rng.below(65) as usize;
            let value = rng.bytes(len);
            store.set_bytes(&key, &value).unwrap();
            model.insert(key, value);
        }
    }
    check_all(&store, &model, "background compaction");
    drop(store);
    check_all(&KvStore::open(dir.path()).unwrap(), &model, "reopen");
}
