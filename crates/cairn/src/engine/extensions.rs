//! Per-store state of the layers above the engine, kept on the store handle without the
//! engine knowing its types: what opening found (strays, leftovers), the backup events'
//! subscribers, the automatic backups' stop signal. One value per type; a value's `Drop` runs
//! when the store closes (after the writer stopped).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A map from type to one shared value of it.
#[derive(Default)]
pub(crate) struct Extensions {
    items: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions").finish_non_exhaustive()
    }
}

impl Extensions {
    /// Keeps `value`, replacing any earlier value of its type.
    pub(crate) fn insert<T: Any + Send + Sync>(&self, value: T) {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was kept.
    pub(crate) fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.get(&TypeId::of::<T>()).cloned().and_then(|v| v.downcast::<T>().ok())
    }

    /// The value of type `T`, made with `T::default()` and kept if there was none.
    pub(crate) fn get_or_default<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let value = items.entry(TypeId::of::<T>()).or_insert_with(|| Arc::new(T::default())).clone();
        value.downcast::<T>().expect("an extension is stored under its own type")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_type() {
        let ext = Extensions::default();
        assert!(ext.get::<u32>().is_none());
        ext.insert(7_u32);
        ext.insert(String::from("x"));
        assert_eq!(*ext.get::<u32>().expect("u32"), 7);
        assert_eq!(*ext.get_or_default::<u64>(), 0);
        ext.insert(8_u32);
        assert_eq!(*ext.get::<u32>().expect("replaced"), 8);
    }
}
