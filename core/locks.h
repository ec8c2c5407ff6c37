/*
 * locks.h: keys of the PostgreSQL advisory locks the engine takes.
 *
 * All in one place so two subsystems never pick the same key. The high 32 bits spell
 * "Solo"; the low bits name the lock.
 */
#ifndef SB_LOCKS_H
#define SB_LOCKS_H

#define SB_LOCK_MIGRATE "6012680095412830209"   /* 0x536F6C6F00000001: db migrate */
#define SB_LOCK_SCHEDULER "6012680095412830210" /* 0x536F6C6F00000002: scheduler leader */
/* 0x536F6C6F00000003: taken by the instance_events commit trigger (schema/001) */
#define SB_LOCK_EVENTS "6012680095412830211"

#endif
