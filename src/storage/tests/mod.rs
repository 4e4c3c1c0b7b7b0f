//! The storage contract suite, run against every [`MessageStore`](super::MessageStore)
//! implementation (nats-server's way: one test body, several stores). Tests of one
//! store's own machinery live beside it (`disk/tests.rs`).

mod contract;
pub(crate) mod harness;

/// Instantiates every contract case for one harness.
macro_rules! contract_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::contract;
            #[allow(unused_imports)]
            use super::harness::*;

            contract_suite!(@cases $make;
                published_messages_recover_in_id_order,
                acked_messages_do_not_come_back,
                the_delivered_watermark_marks_messages_redelivered,
                a_purge_keeps_only_the_unacked_deliveries,
                a_deleted_queue_is_gone_and_its_name_can_start_over,
                queues_with_the_same_name_in_two_vhosts_are_apart,
                an_empty_store_recovers_nothing,
                message_content_round_trips_exactly,
                ids_are_never_reused_after_everything_is_acked,
                many_appends_all_complete_and_keep_their_order,
                reads_answer_live_messages_by_id_even_after_compaction_and_restart,
                delivery_counts_survive_restarts_rolls_and_reclamation
            );
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let mut h = $make;
                contract::$case(&mut h);
            }
        )*
    };
}

contract_suite!(memory, MemoryHarness::default());
contract_suite!(disk, DiskHarness::new(1 << 20));
contract_suite!(disk_tiny_segments, DiskHarness::new(4096));
contract_suite!(
    disk_interval_fsync,
    DiskHarness::with(64 * 1024, crate::storage::FsyncPolicy::IntervalMs(5))
);
