/* work: a small thread pool whose completions are dispatched on a qb_loop. */
#include "agent/work.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct item {
	work_fn fn, done;
	void *arg;
	struct item *next;
};

struct work_queue {
	qb_loop_t *loop;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct item *todo, *todo_tail;
	struct item *finished, *finished_tail;
	int efd;
	bool stopping;
	unsigned nthreads;
	pthread_t threads[];
};

static void append(struct item **head, struct item **tail, struct item *it)
{
	it->next = NULL;
	if (*tail)
		(*tail)->next = it;
	else
		*head = it;
	*tail = it;
}

static void *worker(void *data)
{
	struct work_queue *q = data;
	struct item *it;
	uint64_t one = 1;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->todo && !q->stopping)
			pthread_cond_wait(&q->cond, &q->lock);
		if (!q->todo)
			break;
		it = q->todo;
		q->todo = it->next;
		if (!q->todo)
			q->todo_tail = NULL;
		pthread_mutex_unlock(&q->lock);
		it->fn(it->arg);
		pthread_mutex_lock(&q->lock);
		append(&q->finished, &q->finished_tail, it);
		/* Can only fail when the counter saturates; the loop wakes anyway. */
		(void)!write(q->efd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static void run_finished(struct work_queue *q)
{
	struct item *list, *next;

	pthread_mutex_lock(&q->lock);
	list = q->finished;
	q->finished = q->finished_tail = NULL;
	pthread_mutex_unlock(&q->lock);
	for (; list; list = next) {
		next = list->next;
		if (list->done)
			list->done(list->arg);
		free(list);
	}
}

static int on_event(int fd, int revents, void *data)
{
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		return 0;
	run_finished(data);
	return 0;
}

struct work_queue *work_queue_new(qb_loop_t *loop, unsigned threads)
{
	struct work_queue *q = calloc(1, sizeof(*q) + threads * sizeof(pthread_t));

	if (!q)
		return NULL;
	q->loop = loop;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0 ||
	    qb_loop_poll_add(loop, QB_LOOP_MED, q->efd, POLLIN, q, on_event) < 0)
		goto fail;
	for (; q->nthreads < threads; q->nthreads++)
		if (pthread_create(&q->threads[q->nthreads], NULL, worker, q) != 0)
			goto fail;
	return q;
fail:
	work_queue_free(q);
	return NULL;
}

int work_queue_push(struct work_queue *q, work_fn fn, work_fn done, void *arg)
{
	struct item *it = calloc(1, sizeof(*it));

	if (!it)
		return -ENOMEM;
	it->fn = fn;
	it->done = done;
	it->arg = arg;
	pthread_mutex_lock(&q->lock);
	append(&q->todo, &q->todo_tail, it);
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return 0;
}

void work_queue_free(struct work_queue *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	for (unsigned i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	run_finished(q);
	if (q->efd >= 0) {
		qb_loop_poll_del(q->loop, q->efd);
		close(q->efd);
	}
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q);
}
