//! The sink consumer's messages taken in batches. rust-rdkafka's `poll` hands over one message
//! per call, and each call reads the clock about three times (rust-rdkafka's own timeout, and
//! librdkafka's poll-interval bookkeeping): a sixth of the poll thread's samples at 100 B.
//! Here every assigned partition's fetched messages are forwarded to a queue of the task's
//! own ([`FetchQueue`]), read with `rd_kafka_consume_batch_queue`: one wait and one
//! poll-interval mark per batch.
//! Rebalances, errors and logs stay on the consumer's own queue, which the poll thread keeps
//! serving with `poll`; an event arriving there wakes a wait on the fetch queue.

use std::ffi::{c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};

use super::wire::Consumed;

/// A queue of the task's own that each assigned partition's messages are forwarded to.
pub struct FetchQueue<'c> {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// The consumer's own queue, whose events wake a wait on `queue`.
    consumer_queue: *mut rdsys::rd_kafka_queue_t,
    /// Cleared before `queue` is destroyed.
    forward_to: &'c ForwardTo,
}

/// The fetch queue the rebalance handler forwards newly assigned partitions to; null while
/// there is none (before the poll thread starts, after it ends).
#[derive(Default)]
pub struct ForwardTo(AtomicPtr<rdsys::rd_kafka_queue_t>);

impl ForwardTo {
    /// Forwards the fetched messages of `topic`/`partition` to the fetch queue, if there is
    /// one. Called before the partition is assigned, so none of its messages reach the
    /// consumer's own queue.
    pub fn forward<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) {
        let queue = self.0.load(Ordering::Acquire);
        let Ok(topic) = CString::new(topic) else {
            return;
        };
        if queue.is_null() {
            return;
        }
        // SAFETY: the client is alive (borrowed). `queue` is valid while it is set: it is set
        // and cleared by the poll thread, and the rebalance handler that calls this runs on
        // that thread (inside `poll`) or after it ended (in the consumer's close).
        unsafe {
            let partition_queue = rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            );
            if !partition_queue.is_null() {
                rdsys::rd_kafka_queue_forward(partition_queue, queue);
                rdsys::rd_kafka_queue_destroy(partition_queue);
            }
        }
    }
}

/// Wakes a wait on the fetch queue when an event reaches the consumer's own queue.
unsafe extern "C" fn wake(_rk: *mut rdsys::rd_kafka_t, queue: *mut c_void) {
    // SAFETY: the callback is removed before the fetch queue is destroyed.
    unsafe { rdsys::rd_kafka_queue_yield(queue.cast()) };
}

impl<'c> FetchQueue<'c> {
    /// A fetch queue for `consumer`, registered with `forward_to` until dropped.
    pub fn new<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        forward_to: &'c ForwardTo,
    ) -> FetchQueue<'c> {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is a live consumer; both handles are destroyed in `Drop`.
        let (queue, consumer_queue) = unsafe {
            let queue = rdsys::rd_kafka_queue_new(rk);
            let consumer_queue = rdsys::rd_kafka_queue_get_consumer(rk);
            if !consumer_queue.is_null() {
                rdsys::rd_kafka_queue_cb_event_enable(consumer_queue, Some(wake), queue.cast());
            }
            (queue, consumer_queue)
        };
        forward_to.0.store(queue, Ordering::Release);
        FetchQueue {
            queue,
            consumer_queue,
            forward_to,
        }
    }

    /// Up to `max` fetched messages (at most `into`'s capacity), waiting up to `timeout` for
    /// them all (less when an event wakes the wait); with no wait, what the queue holds.
    pub fn consume(&self, timeout: Duration, max: usize, into: &mut Fetched) {
        into.clear();
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `messages` has room for `capacity` pointers; librdkafka writes `n` of them,
        // each a message this side now owns (destroyed by `Fetched`).
        unsafe {
            let n = rdsys::rd_kafka_consume_batch_queue(
                self.queue,
                timeout_ms,
                into.messages.as_mut_ptr(),
                max.min(into.messages.capacity()),
            );
            if n > 0 {
                into.messages.set_len(n as usize);
            }
        }
    }
}

impl Drop for FetchQueue<'_> {
    fn drop(&mut self) {
        // No partition is forwarded here from now on (the rebalance handler runs on the thread
        // that drops this, inside `poll`, or later in the consumer's close).
        self.forward_to.0.store(ptr::null_mut(), Ordering::Release);
        // SAFETY: the handles were created in `new` and are destroyed once; the wake callback
        // is removed (under the consumer queue's lock, which its calls hold) before the queue
        // it wakes is destroyed.
        unsafe {
            if !self.consumer_queue.is_null() {
                rdsys::rd_kafka_queue_cb_event_enable(self.consumer_queue, None, ptr::null_mut());
                rdsys::rd_kafka_queue_destroy(self.consumer_queue);
            }
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// Messages taken from the fetch queue, destroyed when cleared or dropped.
pub struct Fetched {
    messages: Vec<*mut rdsys::rd_kafka_message_t>,
    /// The last topic handle read, with its name: a batch's messages are mostly of one topic.
    topic: (*mut rdsys::rd_kafka_topic_t, String),
}

impl Fetched {
    pub fn with_capacity(capacity: usize) -> Fetched {
        Fetched {
            messages: Vec::with_capacity(capacity),
            topic: (ptr::null_mut(), String::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn clear(&mut self) {
        for message in self.messages.drain(..) {
            // SAFETY: each message was handed over by `rd_kafka_consume_batch_queue`.
            unsafe { rdsys::rd_kafka_message_destroy(message) };
        }
    }

    /// `f` of message `i` as the wire needs it, or the error librdkafka put in its place.
    pub fn with<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&Consumed<'_>) -> R,
    ) -> Result<R, rdkafka::error::KafkaError> {
        let message = self.messages[i];
        // SAFETY: the message is alive until `clear`, which needs `&mut self`, so not while
        // the returned borrow lives; its fields are as librdkafka documents them.
        unsafe {
            let m = &*message;
            if m.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(rdkafka::error::KafkaError::MessageConsumption(m.err.into()));
            }
            if self.topic.0 != m.rkt {
                let name = CStr::from_ptr(rdsys::rd_kafka_topic_name(m.rkt));
                self.topic = (m.rkt, name.to_string_lossy().into_owned());
            }
            let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            let timestamp = rdsys::rd_kafka_message_timestamp(message, &mut kind);
            let timestamp_ms = (timestamp != -1
                && kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
                .then_some(timestamp);
            let mut headers = Vec::new();
            let mut hdrs: *mut rdsys::rd_kafka_headers_t = ptr::null_mut();
            if rdsys::rd_kafka_message_headers(message, &mut hdrs)
                == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                let mut idx = 0;
                loop {
                    let (mut name, mut value, mut size) = (ptr::null(), ptr::null(), 0usize);
                    if rdsys::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size)
                        != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    {
                        break;
                    }
                    // Kafka Connect reads header keys as UTF-8, replacing what is not.
                    let key = CStr::from_ptr(name).to_string_lossy();
                    headers.push((key, slice(value.cast(), size)));
                    idx += 1;
                }
            }
            let headers: Vec<(&str, Option<&[u8]>)> =
                headers.iter().map(|(k, v)| (k.as_ref(), *v)).collect();
            Ok(f(&Consumed {
                topic: &self.topic.1,
                partition: m.partition,
                offset: m.offset,
                key: slice(m.key.cast(), m.key_len),
                value: slice(m.payload.cast(), m.len),
                headers: &headers,
                timestamp_ms,
            }))
        }
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A C buffer as a slice; `None` for a null pointer (a Kafka null).
///
/// # Safety
/// `data` must be null or point to `len` bytes alive for `'a`.
unsafe fn slice<'a>(data: *const u8, len: usize) -> Option<&'a [u8]> {
    if data.is_null() {
        None
    } else {
        // SAFETY: as the caller promises.
        Some(unsafe { std::slice::from_raw_parts(data, len) })
    }
}

/// Records between `next` (the next offset per partition) and the high watermarks the
/// consumer last saw in fetch responses (cached: no request to the broker): the sink task's
/// consumer lag, over the partitions it has read from.
pub fn lag<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    next: &std::collections::BTreeMap<(String, i32), i64>,
) -> i64 {
    let rk = consumer.client().native_ptr();
    let mut total = 0;
    for ((topic, partition), next) in next {
        let Ok(name) = CString::new(topic.as_str()) else {
            continue;
        };
        let (mut low, mut high) = (0i64, 0i64);
        // SAFETY: `rk` is a live client (borrowed); the call only reads its cached watermarks
        // into the two locals.
        let err = unsafe {
            rdsys::rd_kafka_get_watermark_offsets(
                rk,
                name.as_ptr(),
                *partition,
                &mut low,
                &mut high,
            )
        };
        if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 {
            total += (high - next).max(0);
        }
    }
    total
}
