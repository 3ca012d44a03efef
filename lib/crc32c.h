/* SPDX-License-Identifier: MIT */
/*
 * CRC-32C (Castagnoli): the checksum of iSCSI, ext4 and btrfs metadata, and
 * of swapped-out KV blocks. The SSE4.2 crc32 instruction computes it where
 * the CPU has one; a table does elsewhere.
 */
#ifndef _KV_LIB_CRC32C_H
#define _KV_LIB_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len);
int crc32c_hw_supported(void);
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

#endif /* _KV_LIB_CRC32C_H */
