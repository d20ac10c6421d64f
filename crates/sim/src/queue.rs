//! The prompt queue and the history: stock's `PromptQueue`
//! (S:execution.py:1249-1389), one worker, FIFO by `number`.
//!
//! Pending prompts live in a binary heap laid out exactly as Python's
//! `heapq` lays it out, ordered by `(number, prompt_id)`, because
//! `GET /queue` shows the raw heap. Every change that stock announces
//! (put, get, task done, wipe, delete) broadcasts a `status` frame while
//! the queue is locked, so `queue_remaining` values reach clients in order.

use std::cmp::Ordering;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use super::ws::{Hub, lock};

/// Stock's `MAXIMUM_HISTORY_SIZE`.
const MAX_HISTORY: usize = 10_000;

/// One queued prompt: stock's `(number, prompt_id, prompt, extra_data,
/// outputs_to_execute)`. Stock's sixth slot (credentials for API nodes) is
/// dropped: the simulator has no API nodes, and it must never show them.
#[derive(Clone, Debug)]
pub(crate) struct QueueItem {
    /// As answered by `POST /prompt`: an int, or a float if the client set it.
    pub number: Value,
    pub prompt_id: String,
    pub prompt: Arc<Value>,
    /// Without the sensitive keys, which never appear in queue or history.
    pub extra_data: Map<String, Value>,
    pub outputs: Vec<String>,
}

impl QueueItem {
    /// The 5-element array of `/queue` and history.
    pub fn to_json(&self) -> Value {
        json!([
            self.number,
            self.prompt_id,
            *self.prompt,
            self.extra_data,
            self.outputs
        ])
    }

    pub fn client_id(&self) -> Option<&str> {
        self.extra_data.get("client_id").and_then(Value::as_str)
    }

    /// Python's tuple comparison on `(number, prompt_id)`.
    fn less(&self, other: &QueueItem) -> bool {
        let a = self.number.as_f64().unwrap_or(0.0);
        let b = other.number.as_f64().unwrap_or(0.0);
        match a.partial_cmp(&b) {
            Some(Ordering::Less) => true,
            Some(Ordering::Equal) => self.prompt_id < other.prompt_id,
            _ => false,
        }
    }
}

#[derive(Default)]
struct Inner {
    heap: Vec<QueueItem>,
    running: Option<QueueItem>,
    /// `PromptServer.number`: the next number for a prompt that sets none.
    counter: i64,
    history: Map<String, Value>,
}

pub(crate) struct Queue {
    inner: Mutex<Inner>,
    wake: Notify,
    hub: Arc<Hub>,
}

impl Queue {
    pub fn new(hub: Arc<Hub>) -> Queue {
        Queue {
            inner: Mutex::default(),
            wake: Notify::new(),
            hub,
        }
    }

    /// `queue_remaining`: pending plus running.
    pub fn remaining(&self) -> usize {
        let inner = lock(&self.inner);
        inner.heap.len() + usize::from(inner.running.is_some())
    }

    fn broadcast_status(&self, inner: &Inner) {
        let remaining = inner.heap.len() + usize::from(inner.running.is_some());
        self.hub.send(
            None,
            "status",
            json!({"status": {"exec_info": {"queue_remaining": remaining}}}),
        );
    }

    /// Takes the next automatic number (every `POST /prompt` without a
    /// `number` uses one, valid or not).
    pub fn next_number(&self) -> i64 {
        let mut inner = lock(&self.inner);
        let n = inner.counter;
        inner.counter += 1;
        n
    }

    pub fn put(&self, item: QueueItem) {
        let mut inner = lock(&self.inner);
        inner.heap.push(item);
        let last = inner.heap.len() - 1;
        sift_down(&mut inner.heap, 0, last);
        self.broadcast_status(&inner);
        drop(inner);
        self.wake.notify_one();
    }

    /// Waits for a prompt and marks it running.
    pub async fn get(&self) -> QueueItem {
        loop {
            if let Some(item) = self.try_get() {
                return item;
            }
            // `notify_one` keeps a permit when nobody waits, so a put
            // between `try_get` and here is not missed.
            self.wake.notified().await;
        }
    }

    fn try_get(&self) -> Option<QueueItem> {
        let mut inner = lock(&self.inner);
        let item = heap_pop(&mut inner.heap)?;
        inner.running = Some(item.clone());
        self.broadcast_status(&inner);
        Some(item)
    }

    /// Stores the finished prompt's history entry and frees the worker.
    pub fn task_done(&self, item: &QueueItem, status: Value, outputs: Value, meta: Value) {
        let mut inner = lock(&self.inner);
        inner.running = None;
        if inner.history.len() > MAX_HISTORY
            && let Some(oldest) = inner.history.keys().next().cloned()
        {
            inner.history.shift_remove(&oldest);
        }
        let entry = json!({
            "prompt": item.to_json(),
            "outputs": outputs,
            "status": status,
            "meta": meta,
        });
        inner.history.insert(item.prompt_id.clone(), entry);
        self.broadcast_status(&inner);
    }

    pub fn running_id(&self) -> Option<String> {
        lock(&self.inner)
            .running
            .as_ref()
            .map(|i| i.prompt_id.clone())
    }

    /// `GET /queue`.
    pub fn snapshot(&self) -> Value {
        let inner = lock(&self.inner);
        let running: Vec<Value> = inner.running.iter().map(QueueItem::to_json).collect();
        let pending: Vec<Value> = inner.heap.iter().map(QueueItem::to_json).collect();
        json!({"queue_running": running, "queue_pending": pending})
    }

    /// `POST /queue {"clear": true}`: pending only.
    pub fn wipe(&self) {
        let mut inner = lock(&self.inner);
        inner.heap.clear();
        self.broadcast_status(&inner);
    }

    /// `POST /queue {"delete": [id]}`: the first pending match. Deleting
    /// the last pending prompt wipes the queue, so stock sends two `status`.
    pub fn delete(&self, prompt_id: &str) -> bool {
        let mut inner = lock(&self.inner);
        let Some(at) = inner.heap.iter().position(|i| i.prompt_id == prompt_id) else {
            return false;
        };
        if inner.heap.len() == 1 {
            inner.heap.clear();
            self.broadcast_status(&inner);
        } else {
            inner.heap.remove(at);
            heapify(&mut inner.heap);
        }
        self.broadcast_status(&inner);
        true
    }

    /// `GET /history[?max_items=N][&offset=M]`, with stock's quirks: no
    /// offset and N items means the last N; `max_items=0` still yields one.
    pub fn history(&self, max_items: Option<i64>, offset: Option<i64>) -> Value {
        let inner = lock(&self.inner);
        let len = inner.history.len() as i64;
        let mut offset = offset.unwrap_or(-1);
        if offset < 0
            && let Some(max) = max_items
        {
            offset = len - max;
        }
        let mut out = Map::new();
        for (i, (id, entry)) in inner.history.iter().enumerate() {
            if i as i64 >= offset {
                out.insert(id.clone(), entry.clone());
                if max_items.is_some_and(|max| out.len() as i64 >= max) {
                    break;
                }
            }
        }
        Value::Object(out)
    }

    pub fn history_item(&self, prompt_id: &str) -> Value {
        let inner = lock(&self.inner);
        let mut out = Map::new();
        if let Some(entry) = inner.history.get(prompt_id) {
            out.insert(prompt_id.to_owned(), entry.clone());
        }
        Value::Object(out)
    }

    pub fn wipe_history(&self) {
        lock(&self.inner).history.clear();
    }

    pub fn delete_history(&self, prompt_id: &str) {
        lock(&self.inner).history.shift_remove(prompt_id);
    }
}

/// `heapq._siftdown`: moves `heap[pos]` up towards `start`.
fn sift_down(heap: &mut [QueueItem], start: usize, mut pos: usize) {
    while pos > start {
        let parent = (pos - 1) >> 1;
        if heap[pos].less(&heap[parent]) {
            heap.swap(pos, parent);
            pos = parent;
        } else {
            break;
        }
    }
}

/// `heapq._siftup`: moves the smaller child up until a leaf, then sifts down.
fn sift_up(heap: &mut [QueueItem], mut pos: usize) {
    let end = heap.len();
    let start = pos;
    let mut child = 2 * pos + 1;
    while child < end {
        let right = child + 1;
        if right < end && !heap[child].less(&heap[right]) {
            child = right;
        }
        heap.swap(pos, child);
        pos = child;
        child = 2 * pos + 1;
    }
    sift_down(heap, start, pos);
}

fn heap_pop(heap: &mut Vec<QueueItem>) -> Option<QueueItem> {
    let last = heap.pop()?;
    if heap.is_empty() {
        return Some(last);
    }
    let top = std::mem::replace(&mut heap[0], last);
    sift_up(heap, 0);
    Some(top)
}

fn heapify(heap: &mut [QueueItem]) {
    for i in (0..heap.len() / 2).rev() {
        sift_up(heap, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(number: Value, id: &str) -> QueueItem {
        QueueItem {
            number,
            prompt_id: id.to_owned(),
            prompt: Arc::new(json!({})),
            extra_data: Map::new(),
            outputs: Vec::new(),
        }
    }

    #[test]
    fn pops_in_number_order_with_front_first() {
        let queue = Queue::new(Arc::new(Hub::default()));
        for (n, id) in [
            (json!(2), "c"),
            (json!(0), "a"),
            (json!(-3), "front"),
            (json!(1.5), "b"),
        ] {
            queue.put(item(n, id));
        }
        let order: Vec<String> = (0..4)
            .filter_map(|_| queue.try_get())
            .map(|i| i.prompt_id)
            .collect();
        assert_eq!(order, ["front", "a", "b", "c"]);
    }

    #[test]
    fn history_paging_follows_stock() {
        let queue = Queue::new(Arc::new(Hub::default()));
        for id in ["a", "b", "c", "d"] {
            queue.task_done(&item(json!(0), id), json!({}), json!({}), json!({}));
        }
        let keys = |v: Value| {
            v.as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(keys(queue.history(Some(2), None)), ["c", "d"]);
        assert_eq!(keys(queue.history(Some(2), Some(1))), ["b", "c"]);
        assert_eq!(keys(queue.history(None, Some(3))), ["d"]);
        assert_eq!(keys(queue.history(Some(0), Some(0))), ["a"]);
        queue.delete_history("b");
        assert_eq!(keys(queue.history(None, None)), ["a", "c", "d"]);
    }

    #[test]
    fn delete_removes_pending_only() {
        let queue = Queue::new(Arc::new(Hub::default()));
        queue.put(item(json!(0), "run"));
        queue.put(item(json!(1), "wait"));
        queue.put(item(json!(2), "later"));
        assert!(queue.try_get().is_some());
        assert!(!queue.delete("run"));
        assert!(queue.delete("wait"));
        assert_eq!(queue.remaining(), 2);
        assert_eq!(queue.snapshot()["queue_pending"][0][1], "later");
    }
}
