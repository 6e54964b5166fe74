/* SPDX-License-Identifier: GPL-2.0 */
/*
 * goabi.h: Go's internal register ABI (ABIInternal, Go >= 1.17) as seen
 * from a uprobe. Probes name Go values through these macros only, never
 * through raw pt_regs fields.
 *
 * amd64: integer arguments and results in RAX, RBX, RCX, RDI, RSI, R8, R9,
 *        R10, R11 (in that order); the current goroutine's g in R14.
 * arm64: arguments and results in R0..R15; g in R28.
 *
 * Inside functions reached through runtime.systemstack (runtime.newproc1
 * among them) the g register holds g0, not the user goroutine: such probes
 * must use the function's arguments or results instead.
 *
 * A uprobe's context is the user register file the kernel saved at the
 * breakpoint. Its layout is declared here (x86-64: struct pt_regs;
 * arm64: struct user_pt_regs) so no arch headers are needed.
 */
#pragma once

#include "base.h"

#if defined(__TARGET_ARCH_x86)

struct go_regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10;
	__u64 r9, r8, ax, cx, dx, si, di, orig_ax;
	__u64 ip, cs, flags, sp, ss;
};

#define GO_G(ctx) ((void *)((struct go_regs *)(ctx))->r14)
#define GO_SP(ctx) (((struct go_regs *)(ctx))->sp)
/* The frame pointer: at a function's first instruction, its caller's. */
#define GO_FP(ctx) (((struct go_regs *)(ctx))->bp)
#define GO_PARAM1(ctx) (((struct go_regs *)(ctx))->ax)
#define GO_PARAM2(ctx) (((struct go_regs *)(ctx))->bx)
#define GO_PARAM3(ctx) (((struct go_regs *)(ctx))->cx)
#define GO_PARAM4(ctx) (((struct go_regs *)(ctx))->di)
#define GO_PARAM5(ctx) (((struct go_regs *)(ctx))->si)
#define GO_PARAM6(ctx) (((struct go_regs *)(ctx))->r8)
#define GO_PARAM7(ctx) (((struct go_regs *)(ctx))->r9)
#define GO_PARAM8(ctx) (((struct go_regs *)(ctx))->r10)
#define GO_PARAM9(ctx) (((struct go_regs *)(ctx))->r11)

#elif defined(__TARGET_ARCH_arm64)

struct go_regs {
	__u64 regs[31];
	__u64 sp, pc, pstate;
};

#define GO_G(ctx) ((void *)((struct go_regs *)(ctx))->regs[28])
#define GO_SP(ctx) (((struct go_regs *)(ctx))->sp)
/* R29; the agent learns return sites on amd64 only (frames.h). */
#define GO_FP(ctx) (((struct go_regs *)(ctx))->regs[29])
#define GO_PARAM1(ctx) (((struct go_regs *)(ctx))->regs[0])
#define GO_PARAM2(ctx) (((struct go_regs *)(ctx))->regs[1])
#define GO_PARAM3(ctx) (((struct go_regs *)(ctx))->regs[2])
#define GO_PARAM4(ctx) (((struct go_regs *)(ctx))->regs[3])
#define GO_PARAM5(ctx) (((struct go_regs *)(ctx))->regs[4])
#define GO_PARAM6(ctx) (((struct go_regs *)(ctx))->regs[5])
#define GO_PARAM7(ctx) (((struct go_regs *)(ctx))->regs[6])
#define GO_PARAM8(ctx) (((struct go_regs *)(ctx))->regs[7])
#define GO_PARAM9(ctx) (((struct go_regs *)(ctx))->regs[8])

#else
#error "latscope BPF: define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64"
#endif

/* The first result register is the first argument register. */
#define GO_RESULT1(ctx) GO_PARAM1(ctx)
