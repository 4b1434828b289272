// Explore: the timeline of the selection above its table, flamegraph and sandwich view.

import { h } from '../dom.js';
import { Timeline } from '../timeline.js';
import { fetchRender } from '../api.js';
import { parseTime } from '../query.js';
import { navigate } from '../state.js';
import { ProfilePanel } from './profile-panel.js';

export class ExploreView {
  constructor() {
    this.timelineBox = h('div', { class: 'timeline-box', dataset: { testid: 'timeline' } });
    this.timeline = new Timeline(this.timelineBox, {
      onSelect: (from, until) => navigate({ from: String(from), until: String(until), zoom: '' }),
    });
    this.panel = new ProfilePanel();
    this.el = h('section', { class: 'view explore-view' }, this.timelineBox, this.panel.el);
  }

  async update(state, { isCurrent }) {
    const selection = { query: state.query, from: state.from, until: state.until, maxNodes: state.maxNodes };
    const profile = await fetchRender(selection);
    if (!isCurrent()) return;
    this.timeline.setData({
      from: parseTime(state.from),
      until: parseTime(state.until),
      series: [{ name: state.query, timeline: profile.timeline }],
      metadata: profile.metadata,
    });
    this.panel.update(profile, state, selection);
  }
}
