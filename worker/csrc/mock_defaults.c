/*
 * The embedded Kafka (librdkafka's mock cluster) auto-creates a topic with 4 partitions, a
 * default librdkafka hard-codes and exposes no setter for; Kafka's num.partitions default is 1.
 * This sets the mock cluster's default through its internal struct, compiled against the exact
 * librdkafka tree rdkafka-sys built (DEP_RDKAFKA_ROOT), so the layout always matches.
 */
#include "rdkafka_int.h"
#include "rdkafka_mock_int.h"

void sluice_mock_set_default_partitions(rd_kafka_mock_cluster_t *mcluster, int partitions) {
        mtx_lock(&mcluster->lock);
        mcluster->defaults.partition_cnt = partitions;
        mtx_unlock(&mcluster->lock);
}
