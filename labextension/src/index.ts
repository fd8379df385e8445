/**
 * agentorch-nb: the "Agent runs" sidebar of JupyterLab.
 *
 * Lists the runs of the agentorch_nb server extension with their progress,
 * starts new ones, and answers the tasks waiting for a human.  Live updates
 * come from Jupyter Server's event bus; a refetch every 30 s is the safety net.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { Event } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { AgentorchAPI, errorMessage, IInterrupt } from './api';
import { h, pauseGlyph, setText } from './dom';
import { RunsModel } from './model';
import { AgentRunsPanel } from './sidebar';

const PLUGIN_ID = 'agentorch-nb:plugin';
const CATEGORY = 'Agent runs';

const CommandIDs = {
  openSidebar: 'agentorch:open-sidebar',
  newRun: 'agentorch:new-run',
  refresh: 'agentorch:refresh',
  openQueue: 'agentorch:open-queue'
} as const;

/** Three linked nodes: a small task graph. */
const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="5" cy="6" r="3"/>
    <circle cx="5" cy="18" r="3"/>
    <circle cx="19" cy="12" r="3.5"/>
    <path d="M7.4 7.2l8.6 3.6-.8 1.8-8.6-3.6zM7.4 16.8l8.6-3.6-.8-1.8-8.6 3.6z"/>
  </g>
</svg>`;

const agentRunsIcon = new LabIcon({
  name: 'agentorch-nb:agent-runs',
  svgstr: ICON_SVG
});

/** The status-bar item: how many tasks wait for a human; a click opens the queue. */
class WaitingStatus extends Widget {
  constructor(
    private readonly model: RunsModel,
    onClick: () => void
  ) {
    super({
      node: h('button', {
        type: 'button',
        class: 'ao-status-item',
        title: 'Tasks waiting for a human: open the human queue'
      })
    });
    this.node.append(pauseGlyph(), this.label);
    this.node.addEventListener('click', onClick);
    model.changed.connect(this.update, this);
    this.update();
  }

  update(): void {
    const n = this.model.waiting;
    setText(this.label, `${n} waiting`);
    this.node.setAttribute(
      'aria-label',
      `${n} agent task${n === 1 ? '' : 's'} waiting for a human: open the human queue`
    );
    this.node.dataset.waiting = String(n);
  }

  private readonly label = h('span', { class: 'ao-status-label' });
}

/** Open a notebook in the main area and run all its cells, once its kernel is ready. */
async function openAndRun(app: JupyterFrontEnd, path: string): Promise<void> {
  const widget = (await app.commands.execute('docmanager:open', { path })) as
    | (Widget & { sessionContext?: { ready: Promise<void> } })
    | undefined;
  if (!widget) {
    return;
  }
  app.shell.activateById(widget.id);
  const session = widget.sessionContext;
  if (!session) {
    return;
  }
  try {
    await session.ready;
    // notebook:run-all-cells acts on the current notebook.
    app.shell.activateById(widget.id);
    if (app.shell.currentWidget === widget) {
      await app.commands.execute('notebook:run-all-cells');
    }
  } catch (error) {
    console.warn('agentorch-nb: could not run the dashboard notebook', error);
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The "Agent runs" sidebar of agentorch_nb',
  autoStart: true,
  optional: [ICommandPalette, IStatusBar, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    restorer: ILayoutRestorer | null
  ) => {
    const api = new AgentorchAPI(app.serviceManager.serverSettings);
    const model = new RunsModel(api);

    const panel = new AgentRunsPanel({
      model,
      openPath: async (path: string) => {
        await app.commands.execute('docmanager:open', { path });
      },
      openDashboard: async (runId: string) => {
        const { path } = await api.dashboard(runId);
        await openAndRun(app, path);
      }
    });
    panel.title.icon = agentRunsIcon;
    panel.title.caption = 'Agent runs';
    app.shell.add(panel, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(panel, 'agentorch-runs');
    }

    const showPanel = (): void => {
      app.shell.activateById(panel.id);
    };

    app.commands.addCommand(CommandIDs.openSidebar, {
      label: 'Show agent runs',
      caption: 'Open the Agent runs sidebar',
      icon: agentRunsIcon,
      execute: showPanel
    });
    app.commands.addCommand(CommandIDs.newRun, {
      label: 'New agent run…',
      caption: 'Start a run of agents on an objective',
      execute: () => {
        showPanel();
        panel.showNewRunForm();
      }
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh agent runs',
      execute: () => model.refresh()
    });
    app.commands.addCommand(CommandIDs.openQueue, {
      label: 'Show human queue',
      caption: 'Tasks of agent runs waiting for a human',
      execute: () => {
        showPanel();
        panel.focusQueue();
      }
    });
    if (palette) {
      for (const command of [
        CommandIDs.openSidebar,
        CommandIDs.newRun,
        CommandIDs.refresh,
        CommandIDs.openQueue
      ]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }

    if (statusBar) {
      const item = new WaitingStatus(model, () => {
        void app.commands.execute(CommandIDs.openQueue);
      });
      statusBar.registerStatusItem('agentorch-nb:waiting', {
        item,
        align: 'left',
        rank: 50,
        isActive: () => model.waiting > 0,
        activeStateChanged: model.changed
      });
    }

    model.newInterrupts.connect((_, interrupts: IInterrupt[]) => {
      for (const interrupt of interrupts) {
        const title = interrupt.task_title || interrupt.task_id;
        const reason = interrupt.reason ? `: ${interrupt.reason}` : '';
        Notification.warning(`Task "${title}" is waiting for a human${reason}`, {
          autoClose: 10000,
          actions: [
            {
              label: 'Open queue',
              caption: 'Show the human queue in the Agent runs sidebar',
              callback: () => {
                void app.commands.execute(CommandIDs.openQueue);
              }
            }
          ]
        });
      }
    });
    model.jobChanged.connect((_, job) => {
      if (job.status === 'failed') {
        Notification.error(
          `Agent run job ${job.job_id} failed${job.error ? `: ${job.error}` : ''}`,
          { autoClose: 10000 }
        );
      }
    });

    app.serviceManager.events.stream.connect(
      (_: Event.IManager, event: Event.Emission) => model.handleEvent(event)
    );

    void app.restored.then(() =>
      model.refresh().catch(error => {
        console.warn('agentorch-nb: first load failed', errorMessage(error));
      })
    );
  }
};

export default plugin;
